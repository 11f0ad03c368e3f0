"""From the model's 48 kHz float audio to the bytes that are published and hashed.

The published formats: MP3 320 kbps CBR, 44.1 kHz stereo (default), 16-bit PCM WAV or
16-bit FLAC, 44.1 kHz stereo; exact duration. The steps:

1. resample 48 kHz -> 44.1 kHz with soxr at its highest quality (``VHQ``), over the whole
   clip at once (a one-shot call has no chunk boundaries that could depend on anything);
2. cut or zero-pad to exactly ``round(duration * 44100)`` frames, clip to [-1, 1] (the
   pipeline peaks at -1 dBFS, but resampling can overshoot);
3. encode:
   - MP3 through libsndfile/libmp3lame: ``bitrate_mode="CONSTANT"``, ``compression_level=0``
     is 320 kbps CBR, and libsndfile writes a Xing/"Info" frame with a LAME tag whose encoder
     delay and padding let decoders (libsndfile/mpg123, ffmpeg) return exactly the encoded
     number of frames. lameenc, the other candidate, writes no such tag, so readers guess the
     length (5.04 s for 5 s);
   - WAV by hand: a 44-byte RIFF header (no ``LIST``/``PEAK`` chunks, nothing time-dependent)
     and little-endian int16 samples, ``rint(x * 32767)``;
   - FLAC through libsndfile/libFLAC at compression level 5, from the WAV's int16 samples
     (so a FLAC decodes to exactly the WAV's samples): STREAMINFO (with the MD5 of the
     samples), the vendor string of the pinned libFLAC, no tags, nothing time-dependent.

The bytes are a pure function of the input: no timestamps, no random padding (tests check
every format byte for byte). They do depend on the libmp3lame and libFLAC versions bundled
with the ``soundfile`` wheel, which is pinned like every other dependency.
"""

from __future__ import annotations

import io
import struct
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from acesteps.types import AudioFormat

__all__ = [
    "CHANNELS",
    "SAMPLE_RATE",
    "encode",
    "encode_flac",
    "encode_mp3",
    "encode_wav",
    "exact_frames",
    "resample",
]

SAMPLE_RATE: Final = 44_100
MODEL_SAMPLE_RATE: Final = 48_000
CHANNELS: Final = 2


def exact_frames(duration_s: float) -> int:
    """Frames per channel of a published file of ``duration_s`` seconds."""
    return round(duration_s * SAMPLE_RATE)


def resample(audio_48k: npt.NDArray[np.float32], duration_s: float) -> npt.NDArray[np.float32]:
    """``[2, n]`` at 48 kHz -> ``[exact_frames(duration), 2]`` at 44.1 kHz, clipped, float32."""
    if audio_48k.ndim != 2 or audio_48k.shape[0] != CHANNELS:
        raise ValueError(f"expected [2, samples] audio, got shape {audio_48k.shape}")
    frames = np.ascontiguousarray(audio_48k.T, dtype=np.float32)  # soxr wants [frames, ch]
    out = soxr.resample(frames, MODEL_SAMPLE_RATE, SAMPLE_RATE, quality="VHQ")
    wanted = exact_frames(duration_s)
    if out.shape[0] >= wanted:
        out = out[:wanted]
    else:
        out = np.pad(out, ((0, wanted - out.shape[0]), (0, 0)))
    return np.ascontiguousarray(np.clip(out, -1.0, 1.0), dtype=np.float32)


def _libsndfile(samples: npt.NDArray[np.float32] | npt.NDArray[np.int16], **kind: object) -> bytes:
    """``samples`` (``[frames, 2]`` at 44.1 kHz) in a file libsndfile writes, of ``kind``."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, mode="w", samplerate=SAMPLE_RATE, channels=CHANNELS, **kind) as out:
        out.write(samples)
    return buffer.getvalue()


def encode_mp3(pcm: npt.NDArray[np.float32]) -> bytes:
    """``[frames, 2]`` float at 44.1 kHz -> MP3, 320 kbps CBR, with a Xing/Info + LAME tag."""
    return _libsndfile(
        pcm,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode="CONSTANT",
        compression_level=0.0,  # 0.0 = the highest bitrate: 320 kbps
    )


def int16_samples(pcm: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """``[frames, 2]`` float -> the int16 samples of the lossless formats, ``rint(x * 32767)``."""
    samples: npt.NDArray[np.int16] = np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    return samples


def encode_flac(pcm: npt.NDArray[np.float32]) -> bytes:
    """``[frames, 2]`` float at 44.1 kHz -> 16-bit FLAC of exactly the WAV's samples."""
    return _libsndfile(
        int16_samples(pcm),  # int16 in, int16 stored: no rescaling by libsndfile
        format="FLAC",
        subtype="PCM_16",
        compression_level=5 / 8,  # libFLAC level 5, its own default
    )


def encode_wav(pcm: npt.NDArray[np.float32]) -> bytes:
    """``[frames, 2]`` float at 44.1 kHz -> 16-bit PCM WAV with a canonical 44-byte header."""
    samples = int16_samples(pcm)
    data: bytes = samples.tobytes()  # interleaved L R L R ...
    block_align = CHANNELS * 2
    header = b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + len(data)),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH",
                16,  # fmt chunk size
                1,  # PCM
                CHANNELS,
                SAMPLE_RATE,
                SAMPLE_RATE * block_align,  # byte rate
                block_align,
                16,  # bits per sample
            ),
            b"data",
            struct.pack("<I", len(data)),
        )
    )
    return header + data


def encode(audio_48k: npt.NDArray[np.float32], duration_s: float, fmt: AudioFormat) -> bytes:
    """The published file: resampled, exact length, in ``fmt``."""
    pcm = resample(audio_48k, duration_s)
    if fmt == "mp3":
        return encode_mp3(pcm)
    if fmt == "wav":
        return encode_wav(pcm)
    if fmt == "flac":
        return encode_flac(pcm)
    raise ValueError(f"unknown format {fmt!r}")
