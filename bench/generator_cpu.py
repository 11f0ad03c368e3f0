"""Per-stage time of the generator on the CPU with the tiny checkpoint, as one JSON object.

Usage: ``python bench/generator_cpu.py [--durations 5 30 240] [--runs 3]``

For each clip length: the best of ``--runs`` timings of the model (`Model.generate`, one job;
wall-clock seconds, torch's threads), and the CPU stages in CPU-seconds (`time.process_time`,
every thread of the process): the 48 -> 44.1 kHz resampling, MP3 encoding by each encoder
(`generator.audio.MP3_ENCODERS`: lameenc, the default, and libsndfile, which made older
tracks; and lameenc at LAME quality 2, the alternative to quality 3 that was measured for the
choice, not an encoder the service runs), WAV encoding, and keccak256 of the MP3 (the
audioHash). The encoders take turns within each run, so that a change in the machine's load
hits all of them alike.

For each encoder: CPU-seconds, speed in seconds of audio per CPU-second (libmp3lame is
single-threaded, so that is per core), the ratio to libsndfile's CPU time, the file's size,
and the signal-to-noise ratio of the decoded file against the samples it was made from (dB;
a rough check that the faster encoder loses nothing gross, not a perceptual measure).
``cpu_stages_s`` is resample + the default MP3 encoder + keccak, and ``cpu_stages_per_30s``
scales it to a 30 s clip (the target: at most 0.5 CPU-s).

``batched`` (top level): four jobs of one shape (the same prompt and lyrics, four seeds, the
``--batch-duration``) run by `Model.generate` in the ``batched`` mode, one pipeline call, and
each alone: ``bit_identical_to_single_runs`` (measured per job), the largest difference, and
the speed ratio of the one call to the four single calls (best of ``--runs``, interleaved);
and ``calls_for_four_prompts``: how many calls four prompts of other token lengths take in
that mode (a call needs equal shapes, `generator.model.BatchKey`).

``cpu_stages_in_threads`` (top level): the CPU stages of four clips of the last duration one
after another and in a pool of one thread per core (as the worker runs them): the speed-up
says whether LAME lets the threads run side by side.

``batch_invariant`` (top level): four different requests (other seeds, captions and lyrics
of other token lengths, one ``--batch-duration``) in the ``invariant`` mode: the calls they
take (1: padded with masks), ``bit_identical_to_single_runs`` against each job run alone in
that mode, the largest difference, and the speed of the one call against the four single
calls of that mode and against the four run by the default ``sequential`` mode (torch's own
kernels; on the CPU the invariant kernels are elementwise compositions, slower than those).

The tiny model is random and ~100 k parameters, so its "model" time is mostly the VAE decoder
at 48 kHz; what it is for is the ratio of the CPU stages to the model time of the same run.
Set ``ACESTEPS_GENERATOR_TINY_DIR`` to move the cached checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import soundfile as sf
import torch

from acesteps.hashing import keccak256
from generator import audio
from generator.jobs import Job
from generator.model import Audio, Model, load_pipeline
from generator.settings import GeneratorSettings

T = TypeVar("T")

LAMEENC_Q2 = "lameenc at LAME quality 2 (measured, not used)"


def _best(fn: Callable[[], T], runs: int, clock: Callable[[], float]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = clock()
        result = fn()
        best = min(best, clock() - start)
    assert result is not None
    return best, result


def _cpu(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    return _best(fn, runs, time.process_time)


def _snr_db(data: bytes, pcm: npt.NDArray[np.float32]) -> float:
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert decoded.shape == pcm.shape, "the decoded file has another length"
    noise = float(np.sum((decoded.astype(np.float64) - pcm) ** 2))
    return 10 * float(np.log10(float(np.sum(pcm.astype(np.float64) ** 2)) / noise))


def _threads(samples: Audio, duration: float, clips: int = 4) -> dict[str, object]:
    """The CPU stages of ``clips`` clips (resample + default MP3 + keccak, `audio.encode`)
    one after another and in a pool of one thread per core, as the worker runs them: whether
    the encoder lets threads run side by side (it must release the GIL)."""
    cores = os.cpu_count() or 1

    def stages(x: Audio) -> bytes:
        return keccak256(audio.encode(x, duration, "mp3"))

    started = time.perf_counter()
    for _ in range(clips):
        stages(samples)
    serial = time.perf_counter() - started
    with ThreadPoolExecutor(cores) as pool:
        started = time.perf_counter()
        list(pool.map(stages, [samples] * clips))
        threaded = time.perf_counter() - started
    return {
        "clips": clips,
        "duration_s": duration,
        "threads": cores,
        "serial_wall_s": round(serial, 3),
        "threaded_wall_s": round(threaded, 3),
        "speedup": round(serial / threaded, 2),
    }


def _against_singles(
    model: Model, jobs: list[Job], runs: int
) -> tuple[list[Audio], list[Audio], float, float]:
    """``jobs`` in one `Model.generate` and one by one: outputs and best wall seconds of
    each (interleaved, best of ``runs``)."""
    together, alone = float("inf"), float("inf")
    for _ in range(runs):
        seconds, batch = _best(partial(model.generate, jobs), 1, time.perf_counter)
        together = min(together, seconds)
        started, singles = time.perf_counter(), [model.generate([job])[0] for job in jobs]
        alone = min(alone, time.perf_counter() - started)
    return batch, singles, together, alone


def _identity(batch: list[Audio], singles: list[Audio]) -> dict[str, object]:
    pairs = list(zip(batch, singles, strict=True))
    return {
        "bit_identical_to_single_runs": [bool(np.array_equal(a, b)) for a, b in pairs],
        "max_abs_diff": float(max(np.abs(a - b).max() for a, b in pairs)),
    }


def _batched(settings: GeneratorSettings, duration: float, runs: int) -> dict[str, object]:
    """The batched mode against single runs: one shape, four seeds (see the docstring)."""
    model = load_pipeline(settings.with_overrides(generator_batch_mode="batched"))
    jobs = [Job("dreamy lo-fi, piano, rain", "[verse]\nhello", duration, seed) for seed in range(4)]
    assert len({model.batch_key(job) for job in jobs}) == 1, "one shape, one call"
    batch, singles, together, alone = _against_singles(model, jobs, runs)
    prompts = ["piano", "a slow sad cello piece", "drums, bass, synth, fx", "rain at night"]
    mixed = [Job(prompt, "[Instrumental]", duration, 1) for prompt in prompts]
    return {
        "mode": "batched",
        "batch_size": len(jobs),
        "duration_s": duration,
        **_identity(batch, singles),
        "speed_ratio_to_single_runs": round(alone / together, 3),
        "calls_for_four_prompts": len(model.plan(mixed)),
    }


FOUR_REQUESTS = (
    ("piano", "[verse]\nhello"),
    ("a slow sad cello piece with strings and a choir", "[Instrumental]"),
    ("drums, bass, synth, fx", "[verse]\nwe sing it loud\n[chorus]\nand again and again"),
    ("rain at night", "[chorus]\nla la la la"),
)


def _batch_invariant(settings: GeneratorSettings, duration: float, runs: int) -> dict[str, object]:
    """The invariant mode: four different requests in one call against their single runs in
    that mode, and the time of the four run one by one in the default sequential mode."""
    model = load_pipeline(settings.with_overrides(generator_batch_mode="invariant"))
    jobs = [
        Job(caption, lyrics, duration, seed)
        for seed, (caption, lyrics) in enumerate(FOUR_REQUESTS, start=7)
    ]
    # The default sequential mode (torch's own kernels) on the same pipeline.
    native = model.with_settings(model.settings.with_overrides(generator_batch_mode="sequential"))
    shapes = {(k.text_tokens, k.lyric_tokens) for k in map(native.batch_key, jobs)}
    batch, singles, together, alone = _against_singles(model, jobs, runs)
    native_s, _ = _best(partial(native.generate, jobs), runs, time.perf_counter)
    return {
        "mode": "invariant",
        "batch_size": len(jobs),
        "calls": len(model.plan(jobs)),
        "token_length_shapes": len(shapes),
        "duration_s": duration,
        **_identity(batch, singles),
        "speed_ratio_to_single_runs": round(alone / together, 3),
        "speed_ratio_to_sequential_mode": round(native_s / together, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="generator per-stage CPU timings (tiny model)")
    parser.add_argument("--durations", type=float, nargs="+", default=[5.0, 30.0, 240.0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-duration", type=float, default=10.0)
    args = parser.parse_args()

    settings = GeneratorSettings(generator_model="tiny", generator_device="cpu")
    load_s, model = _best(partial(load_pipeline, settings), 1, time.perf_counter)
    model.generate([Job("warm up", "[verse]\nla", 2.0, 0)])

    encoders: dict[str, Callable[[npt.NDArray[np.float32]], bytes]] = {
        **audio.MP3_ENCODERS,
        LAMEENC_Q2: partial(audio.encode_mp3_lameenc, quality=2),
    }
    stages: dict[str, dict[str, object]] = {}
    samples = np.zeros((2, 0), dtype=np.float32)
    for duration in args.durations:
        job = Job("dreamy lo-fi, piano, rain", "[verse]\nhello morning light", duration, 42)
        runs = args.runs if duration <= 60 else 1
        t_model, (samples,) = _best(partial(model.generate, [job]), runs, time.perf_counter)
        t_resample, pcm = _cpu(partial(audio.resample, samples, duration), runs)
        mp3_s = dict.fromkeys(encoders, float("inf"))
        files: dict[str, bytes] = {}
        for _ in range(runs):  # interleaved: each run times every encoder once
            for name, encode in encoders.items():
                seconds, files[name] = _cpu(partial(encode, pcm), 1)
                mp3_s[name] = min(mp3_s[name], seconds)
        t_wav, _ = _cpu(partial(audio.encode_wav, pcm), runs)
        t_hash, _ = _cpu(partial(keccak256, files[audio.MP3_ENCODER]), runs)
        reference = mp3_s[audio.LIBSNDFILE_MP3]
        cpu_stages = t_resample + mp3_s[audio.MP3_ENCODER] + t_hash
        stages[f"{duration:g}s"] = {
            "model_s": round(t_model, 4),
            "resample_cpu_s": round(t_resample, 4),
            "mp3": {
                name: {
                    "cpu_s": round(seconds, 4),
                    "audio_s_per_cpu_s": round(duration / seconds, 1),
                    "speedup_vs_libsndfile": round(reference / seconds, 2),
                    "bytes": len(files[name]),
                    "snr_db": round(_snr_db(files[name], pcm), 2),
                }
                for name, seconds in mp3_s.items()
            },
            "encode_wav_cpu_s": round(t_wav, 4),
            "hash_cpu_s": round(t_hash, 5),
            "cpu_stages_s": round(cpu_stages, 4),
            "cpu_stages_per_30s": round(cpu_stages * 30 / duration, 4),
            "cpu_stages_to_model_ratio": round(cpu_stages / t_model, 3),
            "runs": runs,
        }
    print(
        json.dumps(
            {
                "bench": "generator_cpu",
                "model": model.model_id,
                "device": str(model.device),
                "dtype": str(model.dtype).removeprefix("torch."),
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "default_mp3_encoder": audio.MP3_ENCODER,
                "load_s": round(load_s, 3),
                "stages": stages,
                "cpu_stages_in_threads": _threads(samples, args.durations[-1]),
                "batched": _batched(settings, args.batch_duration, args.runs),
                "batch_invariant": _batch_invariant(settings, args.batch_duration, args.runs),
            }
        )
    )


if __name__ == "__main__":
    main()
