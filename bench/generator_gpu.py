"""Real-size ACE-Step 1.5 on one CUDA GPU, random weights, bf16: throughput and memory as JSON.

Usage: ``python bench/generator_gpu.py [--variants turbo xl-turbo] [--batches 1 4 8]
[--duration 30] [--rounds 2]``. Without CUDA it prints ``{"skipped": "no CUDA"}`` and exits 0.

No weights can be downloaded, so every component is built from its real configuration with
random weights directly on the GPU (construction under ``torch.device("cuda")`` with bf16 as
the default dtype; nothing is materialised on the CPU):

- ``turbo``: the diffusers classes' default configs are the ACE-Step 1.5 (non-XL) sizes:
  DiT 1.58 B (2048 wide, 24 layers), condition encoder 0.61 B;
- ``xl-turbo``: the default hub checkpoint (``ACE-Step/acestep-v15-xl-turbo-diffusers``): DiT
  2560 wide, 32 layers, 32 heads, intermediate 9728, fed by the same 2048-wide condition
  encoder (~4.2 B);
- both: a Qwen3-Embedding-0.6B text encoder (1024 wide, 28 layers) and the 48 kHz Oobleck VAE
  (~0.17 B). The tokenizer is the tiny checkpoint's (a 512-token BPE): captions come out
  longer in tokens than with Qwen's, which makes the text side slightly pessimistic.

For each variant and batch size B (30 s clips, 8 steps, the production `generator.model.Model`
path): seconds per clip and real-time factor in ``sequential`` mode (the default: B jobs run
one by one, bit-identical to single runs) and in ``batched`` mode (one call for B jobs of
equal batch key); peak GPU memory; whether batched output equals single runs bit for bit and
whether a repeat run is identical; and the share of wall time the GPU waits for the CPU
stages (resample + MP3 + keccak of each clip) when they run serially after each batch, and
when they overlap with the next batch in a thread pool (as the worker is meant to), with the
CPU seconds per clip and the cores one GPU needs to keep up; measured for the sequential mode,
the production default.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acesteps.hashing import keccak256
from generator import audio
from generator.jobs import Job
from generator.model import Checkpoint, Model
from generator.settings import GeneratorSettings

# Random weights built in memory: nothing on disk to digest.
RANDOM = Checkpoint(
    source="random", revision=None, path=Path("."), weights_digest="sha256:" + "0" * 64
)

VARIANTS: dict[str, dict[str, Any]] = {
    "turbo": {},  # the diffusers defaults are the non-XL ACE-Step 1.5 sizes
    "xl-turbo": {
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "encoder_hidden_size": 2048,
    },
}
TEXT_ENCODER = {  # Qwen3-Embedding-0.6B
    "vocab_size": 151_669,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 32_768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
VAE = {
    "encoder_hidden_size": 128,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128,
    "decoder_input_channels": 64,
    "audio_channels": 2,
    "sampling_rate": 48_000,
}


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_pipeline(
    variant: str, device: torch.device, dtype: torch.dtype = torch.bfloat16
) -> tuple[Any, dict[str, float]]:
    """The real-size pipeline with random weights, on ``device`` in ``dtype`` (bf16 here;
    ``bench/models.py`` builds it in fp32 on the CPU); and its sizes (B)."""
    from diffusers import (
        AceStepPipeline,
        AceStepTransformer1DModel,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    from generator.tiny import train_tokenizer

    torch.manual_seed(0)
    with device, _default_dtype(dtype), torch.no_grad():
        parts = {
            "transformer": AceStepTransformer1DModel(
                is_turbo=True, model_version="turbo", **VARIANTS[variant]
            ),
            "condition_encoder": AceStepConditionEncoder(),
            "text_encoder": Qwen3Model(Qwen3Config(**TEXT_ENCODER)).eval(),
            "vae": AutoencoderOobleck(**VAE),
        }
        parts["condition_encoder"].silence_latent.normal_(std=0.5)
    sizes = {k: round(sum(p.numel() for p in m.parameters()) / 1e9, 3) for k, m in parts.items()}
    pipe = AceStepPipeline(
        tokenizer=train_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        **parts,
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, sizes


def _jobs(n: int, duration: float, offset: int = 0) -> list[Job]:
    # Same caption and lyric lengths (one batch key), different seeds.
    return [
        Job("dreamy lo-fi, piano, rain", "[verse]\nhello morning light", duration, offset + i)
        for i in range(n)
    ]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - start, out


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else 0


def _post(samples: np.ndarray, duration: float) -> bytes:
    data = audio.encode(samples, duration, "mp3")
    keccak256(data)
    return data


def _idle_share(model: Model, batch: int, duration: float, rounds: int) -> dict[str, float]:
    """How long the GPU waits for the CPU stages, serial vs. overlapped with the next batch."""
    # 1. Serial: generate a batch, post-process it, then the next batch.
    gpu = cpu = 0.0
    for r in range(rounds):
        t_gpu, outs = _timed(partial(model.generate, _jobs(batch, duration, 1000 * r)))
        start = time.perf_counter()
        for samples in outs:
            _post(samples, duration)
        gpu, cpu = gpu + t_gpu, cpu + time.perf_counter() - start
    # 2. Overlapped: batch k is post-processed in a pool while batch k+1 is on the GPU. The
    #    GPU then idles only if the CPU work slows its calls down; a pool that cannot keep up
    #    shows as a backlog still draining after the last batch.
    workers = max(1, (os.cpu_count() or 2) - 1)
    busy = 0.0
    with ThreadPoolExecutor(workers) as pool:
        pending: list[Any] = []
        start = time.perf_counter()
        for r in range(rounds):
            t_gpu, outs = _timed(partial(model.generate, _jobs(batch, duration, 1000 * r)))
            busy += t_gpu
            pending += [pool.submit(_post, s, duration) for s in outs]
        loop = time.perf_counter() - start
        for future in pending:
            future.result()
        drain = time.perf_counter() - start - loop
    clips = rounds * batch
    return {
        "serial": round(cpu / (gpu + cpu), 3),
        "overlapped": round(max(0.0, loop - busy) / loop, 3),
        "overlapped_backlog_s": round(drain, 3),
        "post_workers": workers,
        "cpu_post_s_per_clip": round(cpu / clips, 3),
        "gpu_s_per_clip": round(gpu / clips, 3),
        "cores_to_keep_up": round(cpu / gpu, 2),
    }


def bench_variant(
    variant: str, batches: list[int], duration: float, rounds: int, device: torch.device
) -> dict[str, Any]:
    pipe, sizes = build_pipeline(variant, device)
    base = GeneratorSettings(generator_model="bench", generator_device=device.type)
    result: dict[str, Any] = {"params_b": sizes, "batches": {}}
    for batch in batches:
        row: dict[str, Any] = {}
        for mode in ("sequential", "batched"):
            settings = base.with_overrides(generator_batch_mode=mode, generator_max_batch=batch)
            model = Model(
                pipe,
                settings,
                device=device,
                dtype=torch.bfloat16,
                model_id=f"random-{variant}",
                checkpoint=RANDOM,
            )
            model.generate(_jobs(1, 5.0))  # warm-up: kernels, allocator
            _reset_peak()
            times, outs = [], []
            for _ in range(rounds):
                t, out = _timed(partial(model.generate, _jobs(batch, duration)))
                times.append(t)
                outs.append(out)
            best = min(times)
            row[mode] = {
                "s_per_clip": round(best / batch, 3),
                "real_time_factor": round(best / batch / duration, 4),
                "x_realtime": round(duration * batch / best, 3),
                "peak_gpu_mem_gib": _peak_gib(),
                "repeat_bit_identical": all(
                    np.array_equal(a, b) for a, b in zip(outs[0], outs[-1], strict=True)
                ),
            }
            if mode == "batched":
                single = Model(
                    pipe, base, device=device, dtype=torch.bfloat16, model_id="x", checkpoint=RANDOM
                )
                singles = single.generate(_jobs(batch, duration))
                row[mode]["bit_identical_to_single_runs"] = all(
                    np.array_equal(a, b) for a, b in zip(outs[0], singles, strict=True)
                )
                row[mode]["max_abs_diff_to_single_runs"] = float(
                    max(np.abs(a - b).max() for a, b in zip(outs[0], singles, strict=True))
                )
            else:  # the production default: the one whose CPU side matters
                row[mode]["gpu_idle_share"] = _idle_share(model, batch, duration, rounds)
        result["batches"][str(batch)] = row
    del pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="real-size ACE-Step 1.5 GPU throughput")
    parser.add_argument(
        "--variants", nargs="+", default=["turbo", "xl-turbo"], choices=sorted(VARIANTS)
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cpu-smoke-test",
        action="store_true",
        help="run on the CPU instead (slow; only checks that the code path works)",
    )
    args = parser.parse_args()
    if args.cpu_smoke_test:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    else:
        print(json.dumps({"skipped": "no CUDA"}))
        return
    report: dict[str, Any] = {
        "bench": "generator_gpu",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "dtype": "bfloat16",
        "duration_s": args.duration,
        "steps": 8,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "variants": {},
    }
    for variant in args.variants:
        report["variants"][variant] = bench_variant(
            variant, args.batches, args.duration, args.rounds, device
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
