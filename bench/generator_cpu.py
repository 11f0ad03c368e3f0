"""Per-stage time of the generator on the CPU with the tiny checkpoint, as one JSON object.

Usage: ``python bench/generator_cpu.py [--durations 5 30 240] [--runs 3]``

For each clip length: the best of ``--runs`` timings of the model (`Model.generate`, one job),
the 48 -> 44.1 kHz resampling, MP3 and WAV encoding, and keccak256 of the MP3 (the
audioHash). The tiny model is random and ~100 k parameters, so its "model" time is mostly the
VAE decoder at 48 kHz; what the numbers are for is the *overhead beyond the model*: the
post-processing that runs on the CPU for every track whatever the model, reported as a ratio
to the model time measured in the same run, and MP3 encoding throughput in seconds of audio
per second per core (libmp3lame is single-threaded). Set ``ACESTEPS_GENERATOR_TINY_DIR`` to
move the cached checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch

from acesteps.hashing import keccak256
from generator import audio
from generator.jobs import Job
from generator.model import load_pipeline
from generator.settings import GeneratorSettings

T = TypeVar("T")


def _best(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description="generator per-stage CPU timings (tiny model)")
    parser.add_argument("--durations", type=float, nargs="+", default=[5.0, 30.0, 240.0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    settings = GeneratorSettings(generator_model="tiny", generator_device="cpu")
    load_s, model = _best(partial(load_pipeline, settings), 1)
    model.generate([Job("warm up", "[verse]\nla", 2.0, 0)])

    stages: dict[str, dict[str, float]] = {}
    for duration in args.durations:
        job = Job("dreamy lo-fi, piano, rain", "[verse]\nhello morning light", duration, 42)
        runs = args.runs if duration <= 60 else 1
        t_model, (samples,) = _best(partial(model.generate, [job]), runs)
        t_resample, pcm = _best(partial(audio.resample, samples, duration), runs)
        t_mp3, mp3 = _best(partial(audio.encode_mp3, pcm), runs)
        t_wav, _ = _best(partial(audio.encode_wav, pcm), runs)
        t_hash, _ = _best(partial(keccak256, mp3), runs)
        overhead = t_resample + t_mp3 + t_hash
        stages[f"{duration:g}s"] = {
            "model_s": round(t_model, 4),
            "resample_s": round(t_resample, 4),
            "encode_mp3_s": round(t_mp3, 4),
            "encode_wav_s": round(t_wav, 4),
            "hash_s": round(t_hash, 5),
            "overhead_mp3_s": round(overhead, 4),
            "overhead_to_model_ratio": round(overhead / t_model, 3),
            "mp3_audio_s_per_s_per_core": round(duration / t_mp3, 1),
            "resample_audio_s_per_s": round(duration / t_resample, 1),
            "mp3_bytes": len(mp3),
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
                "load_s": round(load_s, 3),
                "stages": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
