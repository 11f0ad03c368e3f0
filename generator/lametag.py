"""The Xing "Info" frame with the LAME tag that LAME writes in front of a CBR MP3.

lameenc returns LAME's frames without it; decoders that read it (mpg123 in libsndfile,
ffmpeg) take the exact length from it, skipping the encoder delay and the padding, so a
track decodes to exactly its samples. `tag_frame` builds it as LAME 3.100's
``lame_get_lametag_frame`` does for 320 kbps CBR at 44.1 kHz (VbrTag.c): frame and byte
counts, the seek table, encoder delay and padding, the music CRC and the tag's own CRC
(tests/unit/test_generator_audio.py rebuilds libsndfile's tag byte for byte from its frames).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["ENCODER_DELAY", "FRAME_SAMPLES", "MP3_KBPS", "SAMPLE_RATE", "crc16", "tag_frame"]

SAMPLE_RATE: Final = 44_100
MP3_KBPS: Final = 320
FRAME_SAMPLES: Final = 1152
"""Samples per channel in an MPEG-1 Layer III frame."""
ENCODER_DELAY: Final = 576
"""LAME's encoder delay (``lame_get_encoder_delay``): samples before the first input sample."""
_FRAME_BYTES: Final = 144 * MP3_KBPS * 1000 // SAMPLE_RATE  # 1044, + 1 in a padded frame
_SIDE_INFO: Final = 32  # MPEG-1 stereo side information, left zero in the tag frame
_BITRATE_INDEX: Final = 14  # 320 kbps in an MPEG-1 Layer III header


def tag_frame(stream: bytes, samples: int, *, stereo_mode: int, quality: int) -> bytes:
    """The first frame of a CBR MP3 from LAME: an audio-less frame holding the Xing "Info"
    header and the LAME tag, as LAME 3.100's ``lame_get_lametag_frame`` makes it for 320 kbps
    CBR at 44.1 kHz (VbrTag.c); ``stream`` is the encoded frames that follow it, of
    ``samples`` samples per channel, ``stereo_mode`` the tag's code (1 stereo, 3 joint).

    Decoders take the exact length from it: they skip the encoder delay and the padding.
    """
    frames, last = _cbr_frames(stream)
    padding = frames * FRAME_SAMPLES - ENCODER_DELAY - samples
    if not 0 <= padding < 4096:
        raise ValueError(f"{frames} frames cannot hold {samples} samples")
    # LAME's tag frame header: the last frame's, without the padding bit, no CRC.
    header = bytes(
        (0xFF, (last[1] & 0xF1) | 0x0A, (_BITRATE_INDEX << 4) | (last[2] & 0x0D), last[3])
    )
    total = _FRAME_BYTES + len(stream)
    xing = b"".join(
        (
            header,
            bytes(_SIDE_INFO),
            b"Info",  # a CBR file's "Xing"
            struct.pack(">III", 0x0F, frames, total),  # frames, bytes, TOC and quality follow
            _xing_toc(frames),
            struct.pack(">I", 100 - quality),  # 100 - 10 * VBR quality (0) - quality
        )
    )
    lame = b"".join(
        (
            b"LAME3.100",  # the encoder's short version string, 9 bytes
            bytes((0x01, 205)),  # tag revision 0, CBR; lowpass 20500 Hz / 100
            bytes(8),  # peak amplitude and ReplayGain: not computed
            bytes((0x34, 0xFF)),  # nspsytune + safe joint, ATH type 4; bitrate 320 -> 255
            bytes(
                (
                    ENCODER_DELAY >> 4,
                    (ENCODER_DELAY & 0x0F) << 4 | padding >> 8,
                    padding & 0xFF,
                    # noise shaping 1, the stereo mode, 44.1 kHz source
                    1 | stereo_mode << 2 | 1 << 6,
                    0,  # MP3 gain
                )
            ),
            struct.pack(">HIH", MP3_KBPS, total, crc16(stream)),  # preset, length, music CRC
        )
    )
    tagged = xing + lame
    tagged += struct.pack(">H", crc16(tagged))  # the tag's CRC, of everything before it
    return tagged + bytes(_FRAME_BYTES - len(tagged))


def _cbr_frames(stream: bytes) -> tuple[int, bytes]:
    """How many frames ``stream`` holds (320 kbps, 44.1 kHz, MPEG-1 Layer III) and the
    header of the last."""
    frames, pos, last = 0, 0, b""
    while pos < len(stream):
        last = stream[pos : pos + 4]
        if len(last) < 4 or last[0] != 0xFF or last[1] & 0xFE != 0xFA or last[2] >> 4 != 14:
            raise ValueError(f"not a 320 kbps MPEG-1 Layer III frame at byte {pos}")
        frames += 1
        pos += _FRAME_BYTES + (last[2] >> 1 & 1)
    if pos != len(stream) or not frames:
        raise ValueError("the MP3 stream does not end with a whole frame")
    return frames, last


def _xing_toc(frames: int) -> bytes:
    """The Xing seek table of ``frames`` CBR frames, as LAME computes it (``addVbr`` keeps a
    bag of at most 400 running bitrate sums, ``Xing_seek_table`` reads it in float)."""
    size, want, seen, pos, total = 400, 1, 0, 0, 0
    bag = [0] * size
    for _ in range(frames):
        total += MP3_KBPS
        seen += 1
        if seen < want:
            continue
        if pos < size:
            bag[pos], pos, seen = total, pos + 1, 0
        if pos == size:
            for i in range(1, size, 2):
                bag[i // 2] = bag[i]
            want, pos = want * 2, pos // 2
    toc = bytearray(100)
    f32 = np.float32
    for i in range(1, 100):
        index = min(int(np.floor(f32(f32(i) / f32(100)) * f32(pos))), pos - 1)
        toc[i] = min(int(256.0 * float(f32(bag[index])) / float(f32(total))), 255)
    return bytes(toc)


def _crc16_table() -> npt.NDArray[np.uint16]:
    """CRC-16 with the polynomial x^16 + x^15 + x^2 + 1, reflected (LAME's ``crc16_lookup``),
    two bytes a step: the state after two bytes, indexed by the state XOR the two bytes
    (little-endian). The state after one byte b is ``(crc >> 8) ^ byte[(crc ^ b) & 0xFF]``."""
    byte = np.zeros(256, np.uint16)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        byte[i] = crc
    v = np.arange(1 << 16, dtype=np.uint16)
    first = byte[v & 0xFF]  # the high byte of v is the second byte XOR what remains of crc
    table: npt.NDArray[np.uint16] = (first >> 8) ^ byte[((v >> 8) ^ first) & 0xFF]
    return table


_CRC_TABLE2: Final = _crc16_table()
_CRC_BLOCK: Final = 1024  # bytes, even


@cache
def _crc_skip() -> tuple[list[int], list[int]]:
    """The CRC state after `_CRC_BLOCK` zero bytes from a state, a linear map: by its low
    and high byte."""
    states = np.concatenate((np.arange(256), np.arange(256) << 8)).astype(np.uint16)
    for _ in range(_CRC_BLOCK // 2):
        states = _CRC_TABLE2[states]
    skipped: list[int] = states.tolist()
    return skipped[:256], skipped[256:]


def crc16(data: bytes) -> int:
    """LAME's CRC-16 of ``data`` (initial value 0): blocks of `_CRC_BLOCK` bytes side by side
    in numpy, two bytes a step, then chained: a 1.2 MB file in a few ms instead of ~0.3 s
    byte by byte.

    Leading zero bytes leave a CRC with initial value 0 unchanged, so ``data`` is zero-padded
    in front to whole blocks. CRC(A + B) is CRC(A) carried over ``len(B)`` zero bytes, XOR
    CRC(B)."""
    words = np.frombuffer(bytes(-len(data) % _CRC_BLOCK) + data, "<u2")
    words = words.reshape(-1, _CRC_BLOCK // 2)
    crcs = np.zeros(words.shape[0], np.uint16)
    for column in words.T:
        crcs = _CRC_TABLE2[crcs ^ column]
    low, high = _crc_skip()
    crc = 0
    for block in crcs.tolist():
        crc = low[crc & 0xFF] ^ high[crc >> 8] ^ block
    return crc
