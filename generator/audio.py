"""From the model's 48 kHz float audio to the bytes that are published and hashed.

The published formats: MP3 320 kbps CBR, 44.1 kHz stereo (default), 16-bit PCM WAV or
16-bit FLAC, 44.1 kHz stereo; exact duration. The steps:

1. resample 48 kHz -> 44.1 kHz with soxr at its highest quality (``VHQ``), over the whole
   clip at once (a one-shot call has no chunk boundaries that could depend on anything);
2. cut or zero-pad to exactly ``round(duration * 44100)`` frames, clip to [-1, 1] (the
   pipeline peaks at -1 dBFS, but resampling can overshoot);
3. encode:
   - MP3 with one of two named encoders (`MP3_ENCODERS`; the manifest's
     ``output.file.encoder`` says which wrote a track):
     * `LAMEENC_MP3`, the default: LAME 3.100 through lameenc, from the WAV's int16
       samples, 320 kbps CBR, stereo, LAME quality 3 (the quality libsndfile uses, at about
       3x its speed: docs/decisions.md "The MP3 encoder"). lameenc writes no tag of its
       own, so this module puts in front the Xing/"Info" frame with the LAME tag that LAME
       itself writes (`generator.lametag`: frame count, byte count, seek table, encoder delay
       576 and padding, music CRC, tag CRC; a test rebuilds libsndfile's tag byte for byte
       from its frames), and decoders that read it (mpg123 in libsndfile, tested; ffmpeg
       reads the same fields) return exactly the encoded frames, aligned;
     * `LIBSNDFILE_MP3`, what tracks were made with before (their manifests name no
       encoder): libsndfile/libmp3lame from the float samples, ``bitrate_mode="CONSTANT"``,
       ``compression_level=0`` (320 kbps CBR), joint stereo, LAME's default quality 3,
       libsndfile's own Info/LAME tag. Kept so that those tracks still reproduce;
   - WAV by hand: a 44-byte RIFF header (no ``LIST``/``PEAK`` chunks, nothing time-dependent)
     and little-endian int16 samples, ``rint(x * 32767)``;
   - FLAC through libsndfile/libFLAC at compression level 5, from the WAV's int16 samples
     (so a FLAC decodes to exactly the WAV's samples): STREAMINFO (with the MD5 of the
     samples), the vendor string of the pinned libFLAC, no tags, nothing time-dependent.

The bytes are a pure function of the input and the encoder: no timestamps, no random
padding, no ID3 tags (tests check every format byte for byte). They depend on the library
versions, which the MP3 encoder's name carries (lameenc's, libsndfile's) and the manifest's
``environment.packages`` records (soundfile and libsndfile, for FLAC's libFLAC). A change
to what an encoder writes (its settings, the tag) needs a new name.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from importlib.metadata import version
from typing import Final

import lameenc
import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from acesteps.types import AudioFormat
from generator import lametag

__all__ = [
    "CHANNELS",
    "LAMEENC_MP3",
    "LEGACY_MP3_ENCODER",
    "LIBSNDFILE_MP3",
    "MP3_ENCODER",
    "MP3_ENCODERS",
    "SAMPLE_RATE",
    "UnknownEncoder",
    "encode",
    "encode_flac",
    "encode_mp3",
    "encode_mp3_lameenc",
    "encode_mp3_libsndfile",
    "encode_wav",
    "exact_frames",
    "file_encoder",
    "int16_samples",
    "resample",
]

SAMPLE_RATE: Final = 44_100
MODEL_SAMPLE_RATE: Final = 48_000
CHANNELS: Final = 2
MP3_KBPS: Final = 320
LAME_QUALITY: Final = 3
"""LAME's algorithm quality (0 best and slowest ... 9), the one libsndfile's tracks have."""

LAMEENC_MP3: Final = f"lameenc-{version('lameenc')}-lame-q{LAME_QUALITY}-{MP3_KBPS}k"
LIBSNDFILE_MP3: Final = f"libsndfile-{sf.__libsndfile_version__}-{MP3_KBPS}k"
MP3_ENCODER: Final = LAMEENC_MP3
"""The MP3 encoder of new tracks."""
LEGACY_MP3_ENCODER: Final = LIBSNDFILE_MP3
"""What made an MP3 whose manifest names no encoder (every track before the field)."""


class UnknownEncoder(ValueError):
    """An encoder name this install cannot run (another library version, another setting)."""


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


def int16_samples(pcm: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """``[frames, 2]`` float -> the int16 samples of the lossless formats, ``rint(x * 32767)``."""
    samples: npt.NDArray[np.int16] = np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    return samples


# MP3 -------------------------------------------------------------------------------------


def encode_mp3_lameenc(pcm: npt.NDArray[np.float32], quality: int = LAME_QUALITY) -> bytes:
    """``[frames, 2]`` float at 44.1 kHz -> MP3 by LAME (lameenc): 320 kbps CBR, stereo,
    from the int16 samples, behind the Info/LAME tag frame LAME would write. ``quality``
    other than `LAME_QUALITY` is for measurements (bench/generator_cpu.py), not for files."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_KBPS)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_out_sample_rate(SAMPLE_RATE)  # no resampling by LAME
    encoder.set_channels(CHANNELS)  # lameenc makes it STEREO (not joint) above 128 kbps
    encoder.set_quality(quality)
    encoder.silence()
    stream = bytes(encoder.encode(int16_samples(pcm).tobytes()) + encoder.flush())
    return lametag.tag_frame(stream, pcm.shape[0], stereo_mode=1, quality=quality) + stream


def encode_mp3_libsndfile(pcm: npt.NDArray[np.float32]) -> bytes:
    """``[frames, 2]`` float at 44.1 kHz -> MP3 by libsndfile/libmp3lame, 320 kbps CBR, with
    libsndfile's Xing/Info + LAME tag: how MP3 tracks were made before `LAMEENC_MP3`."""
    return _libsndfile(
        pcm,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode="CONSTANT",
        compression_level=0.0,  # 0.0 = the highest bitrate: 320 kbps
    )


MP3_ENCODERS: Final[Mapping[str, Callable[[npt.NDArray[np.float32]], bytes]]] = {
    LAMEENC_MP3: encode_mp3_lameenc,
    LIBSNDFILE_MP3: encode_mp3_libsndfile,
}
"""The MP3 encoders this install runs, by the name a manifest records."""


def encode_mp3(pcm: npt.NDArray[np.float32], encoder: str | None = None) -> bytes:
    """``[frames, 2]`` float at 44.1 kHz -> MP3 by ``encoder`` (a name of `MP3_ENCODERS`;
    None: `MP3_ENCODER`). `UnknownEncoder` for a name this install cannot run."""
    return MP3_ENCODERS[_mp3_encoder(encoder)](pcm)


def _mp3_encoder(name: str | None) -> str:
    name = MP3_ENCODER if name is None else name
    if name not in MP3_ENCODERS:
        raise UnknownEncoder(
            f"MP3 encoder {name!r} is not available here (this install has "
            f"{', '.join(sorted(MP3_ENCODERS))})"
        )
    return name


# WAV and FLAC ----------------------------------------------------------------------------


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


# The published file ----------------------------------------------------------------------


def file_encoder(fmt: AudioFormat, mp3_encoder: str | None = None) -> str | None:
    """The encoder a file of ``fmt`` is written with, as the manifest records it
    (``output.file.encoder``): for MP3 ``mp3_encoder`` (None: `MP3_ENCODER`), checked
    (`UnknownEncoder`); None for WAV (this module's own bytes) and FLAC (one encoder, libFLAC
    through libsndfile, whose version ``environment.packages`` records)."""
    return _mp3_encoder(mp3_encoder) if fmt == "mp3" else None


def encode(
    audio_48k: npt.NDArray[np.float32],
    duration_s: float,
    fmt: AudioFormat,
    mp3_encoder: str | None = None,
    splice: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] | None = None,
) -> bytes:
    """The published file: resampled, exact length, in ``fmt``; an MP3 by ``mp3_encoder``
    (a name of `MP3_ENCODERS`; None: `MP3_ENCODER`), which WAV and FLAC ignore. ``splice``
    (an edit's, `generator.editing.splice`) changes the ``[2, frames]`` 44.1 kHz samples
    before they are encoded."""
    if fmt not in ("mp3", "wav", "flac"):
        raise ValueError(f"unknown format {fmt!r}")
    encoder = file_encoder(fmt, mp3_encoder)  # an unknown encoder fails before resampling
    pcm = resample(audio_48k, duration_s)
    if splice is not None:
        pcm = np.ascontiguousarray(np.clip(splice(pcm.T).T, -1.0, 1.0), dtype=np.float32)
    if encoder is not None:
        return MP3_ENCODERS[encoder](pcm)
    return encode_wav(pcm) if fmt == "wav" else encode_flac(pcm)
