"""Post-processing: 48 kHz model audio -> exact-length 44.1 kHz stereo MP3 (320 kbps CBR) or WAV.

No model here: the input is a synthetic 48 kHz signal. MP3 files (both encoders: lameenc, the
default, and libsndfile, which made older tracks) are parsed frame by frame (MPEG-1 Layer III
headers) to check the bitrate of every frame and the Xing/Info + LAME tag, and decoded with
soundfile (libsndfile + mpg123, which honours the LAME tag's delay and padding: the decoded
length is exact, no tolerance; without the tag it would be 576 + padding frames longer).
"""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import lameenc
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from acesteps.hashing import keccak256_hex
from acesteps.types import AudioFormat
from generator import audio, lametag

SR_IN = 48_000
ROOT = Path(__file__).resolve().parents[2]


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


def _lame_tag(first: bytes) -> dict[str, int]:
    """The fields of the Xing/Info header and LAME tag in ``first``, the tag frame."""
    at = first.index(b"Info")
    flags, frames, size = struct.unpack(">III", first[at + 4 : at + 16])
    lame = at + 120  # after "Info", flags, frames, bytes, the TOC and the quality
    assert flags == 0x0F and first[lame : lame + 9] == b"LAME3.100"
    delay_padding = int.from_bytes(first[lame + 21 : lame + 24], "big")
    return {
        "frames": frames,
        "bytes": size,
        "delay": delay_padding >> 12,
        "padding": delay_padding & 0xFFF,
        "stereo_mode": first[lame + 24] >> 2 & 0b111,
    }


@pytest.mark.parametrize("encoder", sorted(audio.MP3_ENCODERS))
@pytest.mark.parametrize("duration", [5.0, 5.5, 12.345])
def test_mp3_is_320k_cbr_with_an_info_tag_and_decodes_to_the_exact_length(
    duration: float, encoder: str
) -> None:
    data = audio.encode(_signal(duration), duration, "mp3", encoder)
    frames = _frames(data)  # no ID3 tag in front, none at the end: frames only
    assert {bitrate for _, bitrate, _ in frames} == {320}
    assert {rate for _, _, rate in frames} == {44_100}
    first = data[: frames[1][0]]
    assert b"Info" in first and b"LAME" in first  # the CBR tag frame, with the LAME tag
    tag = _lame_tag(first)
    wanted = round(duration * 44_100)
    assert (tag["frames"], tag["bytes"], tag["delay"]) == (len(frames) - 1, len(data), 576)
    assert tag["padding"] == tag["frames"] * 1152 - 576 - wanted
    assert tag["stereo_mode"] == (1 if encoder == audio.LAMEENC_MP3 else 3)  # stereo, joint
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == 44_100
    assert decoded.shape == (wanted, 2)  # exact: the decoder drops delay and padding
    # Lossy, but the same signal: a correlation check catches swapped or shifted channels.
    reference = audio.resample(_signal(duration), duration)
    for ch in (0, 1):
        assert np.corrcoef(decoded[:, ch], reference[:, ch])[0, 1] > 0.99


def test_the_default_mp3_is_lames_at_quality_3_from_the_int16_samples() -> None:
    assert audio.MP3_ENCODER == audio.LAMEENC_MP3 == f"lameenc-{version('lameenc')}-lame-q3-320k"
    assert audio.LIBSNDFILE_MP3 == f"libsndfile-{sf.__libsndfile_version__}-320k"
    assert audio.LEGACY_MP3_ENCODER == audio.LIBSNDFILE_MP3
    signal = _signal(5.0)
    data = audio.encode(signal, 5.0, "mp3")
    assert data == audio.encode(signal, 5.0, "mp3", audio.LAMEENC_MP3)
    assert data != audio.encode(signal, 5.0, "mp3", audio.LIBSNDFILE_MP3)
    # After the tag frame: exactly what LAME makes of the WAV's samples, nothing added.
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(320)
    encoder.set_in_sample_rate(44_100)
    encoder.set_out_sample_rate(44_100)
    encoder.set_channels(2)
    encoder.set_quality(3)
    encoder.silence()
    samples = audio.int16_samples(audio.resample(signal, 5.0)).tobytes()
    assert data[1044:] == bytes(encoder.encode(samples) + encoder.flush())


def test_without_the_tag_a_decoder_would_add_the_delay_and_the_padding() -> None:
    """What the tag frame is for: lameenc writes none, and mpg123 then returns every sample
    of every frame, 576 (the encoder delay) + padding more than were encoded."""
    data = audio.encode(_signal(5.0), 5.0, "mp3")
    tag = _lame_tag(data[:1044])
    decoded, _ = sf.read(io.BytesIO(data[1044:]), dtype="float32", always_2d=True)
    assert decoded.shape[0] == tag["frames"] * 1152 == 220_500 + 576 + tag["padding"]


def test_the_tag_frame_is_the_one_lame_writes() -> None:
    """`lametag.tag_frame` rebuilds libsndfile's tag frame byte for byte from the frames LAME
    (through libsndfile) made: header, seek table, delay, padding, music CRC, tag CRC. 12.345 s
    is 474 frames: past 400, LAME's seek-table bag has halved once."""
    for duration in (5.5, 12.345):
        pcm = audio.resample(_signal(duration), duration)
        made = audio.encode_mp3_libsndfile(pcm)
        rebuilt = lametag.tag_frame(made[1044:], pcm.shape[0], stereo_mode=3, quality=3)
        assert rebuilt == made[:1044]


def test_the_crc_is_lames_crc16() -> None:
    table = [0] * 256
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[i] = crc

    def bytewise(data: bytes) -> int:
        crc = 0
        for byte in data:
            crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
        return crc

    assert lametag.crc16(b"123456789") == 0xBB3D  # CRC-16/ARC's check value
    rng = np.random.default_rng(3)
    for size in (0, 1, 1023, 1024, 1025, 5_000):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert lametag.crc16(data) == bytewise(data)


def test_an_mp3_encoder_this_install_cannot_run_is_refused() -> None:
    with pytest.raises(audio.UnknownEncoder, match=r"lameenc-0\.1\.0.*this install has"):
        audio.encode(_signal(5.0), 5.0, "mp3", "lameenc-0.1.0-lame-q3-320k")
    assert audio.file_encoder("mp3") == audio.MP3_ENCODER
    assert audio.file_encoder("mp3", audio.LIBSNDFILE_MP3) == audio.LIBSNDFILE_MP3
    assert audio.file_encoder("wav") is None and audio.file_encoder("flac") is None


def test_mp3_bytes_are_the_same_in_another_process() -> None:
    """No state of the process (LAME's tables, threads, earlier encodes) reaches the bytes."""
    script = (
        "from acesteps.hashing import keccak256_hex\n"
        "from generator import audio\n"
        "from tests.unit.test_generator_audio import _signal\n"
        "print(keccak256_hex(audio.encode(_signal(5.0), 5.0, 'mp3')))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    audio.encode(_signal(3.0), 3.0, "mp3")  # an earlier encode here changes nothing
    assert other == keccak256_hex(audio.encode(_signal(5.0), 5.0, "mp3"))


def test_mp3_bytes_are_the_same_from_threads_side_by_side() -> None:
    """The pipeline encodes in a thread pool: LAME's instances share nothing that shows."""
    signals = [_signal(5.0, peak=0.5 + k / 10) for k in range(4)]
    alone = [audio.encode(x, 5.0, "mp3") for x in signals]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda x: audio.encode(x, 5.0, "mp3"), signals))
    assert together == alone and len(set(alone)) == 4


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
    kinds: tuple[tuple[AudioFormat, str | None], ...] = (
        ("mp3", audio.LAMEENC_MP3),
        ("mp3", audio.LIBSNDFILE_MP3),
        ("wav", None),
        ("flac", None),
    )
    first = {kind: audio.encode(signal, 5.0, *kind) for kind in kinds}
    time.sleep(1.1)  # a timestamp in the file would change across a second boundary
    other = signal.copy()
    other[0, 1000] += 0.01
    for kind in kinds:
        assert audio.encode(signal.copy(), 5.0, *kind) == first[kind]
        assert audio.encode(other, 5.0, *kind) != first[kind]


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
