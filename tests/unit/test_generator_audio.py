"""Post-processing: 48 kHz model audio -> exact-length 44.1 kHz stereo MP3 (320 kbps CBR) or WAV.

No model here: the input is a synthetic 48 kHz signal. MP3 files are parsed frame by frame
(MPEG-1 Layer III headers) to check the bitrate of every frame and the Xing/Info tag, and
decoded with soundfile (libsndfile + mpg123, which honours the LAME tag's delay and padding).
"""

from __future__ import annotations

import io
import math
import struct
import time

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from acesteps.types import AudioFormat
from generator import audio

SR_IN = 48_000


def _signal(duration_s: float, peak: float = 0.89) -> npt.NDArray[np.float32]:
    """[2, samples] at 48 kHz, whole latent frames long like the model's output, then cut."""
    n = round(duration_s * SR_IN)
    t = np.arange(SR_IN) / SR_IN  # one second; whole-hertz tones repeat seamlessly
    left = np.sin(2 * np.pi * 440 * t) * 0.6 + np.sin(2 * np.pi * 3_000 * t) * 0.3
    right = np.sin(2 * np.pi * 660 * t + 0.5) * 0.9
    x = np.stack([left, right]) * (peak / 0.9)
    return np.tile(x, math.ceil(n / SR_IN))[:, :n].astype(np.float32)


# MPEG-1 Layer III bitrates (kbps) by the header's 4-bit index; sample rates by 2-bit index.
_BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_RATES = (44_100, 48_000, 32_000)


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, bitrate kbps, sample rate) of every MPEG-1 Layer III frame, in order."""
    assert not data.startswith(b"ID3"), "no ID3 tag expected"
    frames, pos = [], 0
    while pos + 4 <= len(data):
        (header,) = struct.unpack(">I", data[pos : pos + 4])
        assert header >> 21 == 0x7FF, f"lost frame sync at byte {pos}"
        assert (header >> 19) & 0b11 == 0b11, "not MPEG-1"
        assert (header >> 17) & 0b11 == 0b01, "not Layer III"
        bitrate = _BITRATES[(header >> 12) & 0xF]
        rate = _RATES[(header >> 10) & 0b11]
        padding = (header >> 9) & 1
        frames.append((pos, bitrate, rate))
        pos += 144 * bitrate * 1000 // rate + padding
    assert pos == len(data), "trailing bytes after the last frame"
    return frames


@pytest.mark.parametrize("duration", [5.0, 5.5, 7.333, 240.0])
def test_resampling_gives_the_exact_number_of_44k1_frames(duration: float) -> None:
    pcm = audio.resample(_signal(duration), duration)
    assert pcm.shape == (round(duration * 44_100), 2)
    assert pcm.dtype == np.float32 and pcm.flags.c_contiguous


def test_resampling_pads_short_input_and_clips_overshoot() -> None:
    pcm = audio.resample(_signal(4.0, peak=1.5), 5.0)
    assert pcm.shape == (220_500, 2)
    assert np.abs(pcm).max() <= 1.0
    assert not pcm[-10_000:].any()  # the second that was missing is silence
    with pytest.raises(ValueError, match="shape"):
        audio.resample(np.zeros((3, 100), np.float32), 5.0)


@pytest.mark.parametrize("duration", [5.0, 5.5, 12.345])
def test_mp3_is_320k_cbr_with_an_info_tag_and_decodes_to_the_exact_length(
    duration: float,
) -> None:
    data = audio.encode(_signal(duration), duration, "mp3")
    frames = _frames(data)
    assert {bitrate for _, bitrate, _ in frames} == {320}
    assert {rate for _, _, rate in frames} == {44_100}
    first = data[: frames[1][0]]
    assert b"Info" in first or b"Xing" in first  # the CBR tag frame, with the LAME tag
    assert b"LAME" in first
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == 44_100
    assert decoded.shape == (round(duration * 44_100), 2)
    # Lossy, but the same signal: a correlation check catches swapped or shifted channels.
    reference = audio.resample(_signal(duration), duration)
    for ch in (0, 1):
        assert np.corrcoef(decoded[:, ch], reference[:, ch])[0, 1] > 0.99


def test_wav_is_16_bit_44k1_stereo_with_exact_samples() -> None:
    signal = _signal(5.5)
    data = audio.encode(signal, 5.5, "wav")
    frames = round(5.5 * 44_100)
    assert len(data) == 44 + frames * 4
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    fmt, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (fmt, channels, rate, byte_rate, align, bits) == (1, 2, 44_100, 176_400, 4, 16)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        44_100,
        2,
        frames,
        "PCM_16",
    )
    decoded, _ = sf.read(io.BytesIO(data), dtype="int16")
    expected = np.rint(audio.resample(signal, 5.5) * 32767).astype(np.int16)
    np.testing.assert_array_equal(decoded, expected)


def test_bytes_are_a_pure_function_of_the_input() -> None:
    signal = _signal(5.0)
    formats: tuple[AudioFormat, ...] = ("mp3", "wav", "flac")
    first = {fmt: audio.encode(signal, 5.0, fmt) for fmt in formats}
    time.sleep(1.1)  # a timestamp in the file would change across a second boundary
    other = signal.copy()
    other[0, 1000] += 0.01
    for fmt in formats:
        assert audio.encode(signal.copy(), 5.0, fmt) == first[fmt]
        assert audio.encode(other, 5.0, fmt) != first[fmt]


def test_flac_is_lossless_16_bit_of_exactly_the_wav_samples() -> None:
    signal = _signal(5.5)
    data = audio.encode(signal, 5.5, "flac")
    assert data[:4] == b"fLaC"
    info = sf.info(io.BytesIO(data))
    frames = audio.exact_frames(5.5)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        44_100,
        2,
        frames,
        "PCM_16",
    )
    flac, _ = sf.read(io.BytesIO(data), dtype="int16")
    wav, _ = sf.read(io.BytesIO(audio.encode(signal, 5.5, "wav")), dtype="int16")
    np.testing.assert_array_equal(flac, wav)
    assert len(data) < len(audio.encode(signal, 5.5, "wav"))  # and it does compress


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        audio.encode(_signal(5.0), 5.0, "ogg")  # type: ignore[arg-type]
