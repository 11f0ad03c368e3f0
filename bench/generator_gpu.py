"""Real-size ACE-Step 1.5 on one CUDA GPU, random weights, bf16: what the GPU target needs.

Usage: ``python bench/generator_gpu.py [--variants turbo xl-turbo] [--batches 1 8 16 32]
[--best-batch 16] [--duration 30] [--rounds 2] [--budget-s 150]``. Without CUDA it prints
``{"skipped": "no CUDA"}`` and exits 0. ``--cpu-smoke-test`` runs every code path on the CPU
with the tiny checkpoint instead (`generator.tiny`; ``--tiny-dir`` moves its cache): one
variant, ``tiny``, 2 s clips, batches 1 and 2, one round; a check of the script, not a
measurement (about a minute on two cores: the invariant mode's CPU kernels are slow).

No weights can be downloaded, so every component is built from its real configuration with
random weights directly on the GPU (under ``torch.device("cuda")`` with bf16 as the default
dtype): ``turbo`` is the diffusers classes' defaults, the ACE-Step 1.5 (non-XL) sizes (DiT
1.58 B, 2048 wide, 24 layers; condition encoder 0.61 B); ``xl-turbo`` the default hub
checkpoint's DiT (``ACE-Step/acestep-v15-xl-turbo-diffusers``: 2560 wide, 32 layers, 32
heads, ~4.2 B) on the same condition encoder; both with a Qwen3-Embedding-0.6B text encoder
and the 48 kHz Oobleck VAE (~0.17 B). The tokenizer is the tiny checkpoint's (a 512-token
BPE): captions come out longer in tokens than with Qwen's (slightly pessimistic).

Everything runs through `generator.model.Model` (8 steps) in the three batch modes of
`generator.settings`. Per variant, in order of importance, one JSON line per step (``variant``,
``step``, its numbers) as soon as it is done:

1. ``build``: billions of parameters per component, seconds to build them.
2. ``batch`` at batch 1 (each mode), then at ``--best-batch`` (batched and invariant; 16 by
   default, near the best throughput of both variants in earlier runs): ``s_per_clip`` (best
   of ``--rounds``), ``real_time_factor`` (s per clip / clip length: below 1 is faster than
   real time), ``peak_gpu_mem_gib``, ``pipeline_calls``, and ``bit_identical_to_single_runs``:
   each job's float32 output of the batch run against that job run alone in the same mode
   (at batch 1 against the first round: a repeat check), with the largest difference. The
   ``batched`` mode gets jobs of one batch key (one caption and lyrics, other seeds: its best
   case); ``sequential`` and ``invariant`` get jobs of one length whose captions and lyrics
   differ in token length, instrumentals among them (what only the invariant mode can group).
3. ``isolation``: job 0 alone again in the sequential and batched modes once the invariant
   mode has run on the same pipeline: still the same bytes (the modes share one pipeline).
4. ``cpu_stages`` (invariant mode, batched if that failed; best batch): CPU-seconds per clip
   of resample + MP3 + keccak (`generator.audio.encode`, as the worker runs them); the share
   of wall time the GPU idles when they run serially after each batch, and when a thread pool
   overlaps them with the next batch (as the worker is meant to; with the backlog left after
   the last batch); the cores one GPU needs to keep up.
5. ``mixed_traffic``: 12 interleaved jobs of three lengths (the clip length, twice and half
   of it) and various lyrics through one `Model.generate` in invariant mode: the pipeline
   calls made (and what `Model.plan` makes of them in each mode), s per clip and per second
   of audio.
6. ``batch`` at the other batch sizes, ascending (batched, invariant), then the sequential
   mode above batch 1 (one round: its calls are the batch-1 calls of step 2).

**Time budget**: each variant, build included, gets ``--budget-s`` seconds (150 by default:
both variants fit one device run of a few minutes). Each step's time is predicted from what
the variant measured so far; a step that does not fit prints ``"skipped": "budget"`` instead
of running. Single runs are cached per mode and job, so a smaller batch after a larger one
costs only its batch runs. A step that fails prints ``"error"`` and the run goes on (out of
memory also skips the mode's larger batches). Lines are flushed, so a run killed at its limit
leaves what it measured; the last line sums it all up (``"summary": true``).
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
from generator.errors import OutOfMemory
from generator.jobs import INSTRUMENTAL, Job
from generator.model import Checkpoint, Model, load_pipeline
from generator.settings import GeneratorSettings

# Random weights built in memory: nothing on disk to digest.
RANDOM = Checkpoint(source="random", revision=None, path=Path("."),
                    weights_digest="sha256:" + "0" * 64)  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    "turbo": {},  # the diffusers defaults are the non-XL ACE-Step 1.5 sizes
    "xl-turbo": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, encoder_hidden_size=2048),
}  # fmt: skip
TEXT_ENCODER = dict(  # Qwen3-Embedding-0.6B
    vocab_size=151_669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
    num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32_768,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)  # fmt: skip
VAE = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10],
           channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128, decoder_input_channels=64,
           audio_channels=2, sampling_rate=48_000)  # fmt: skip
MODES = ("sequential", "batched", "invariant")
MARGIN = 1.2  # a step runs only if its predicted time, times this, fits what is left
POST_S_PER_AUDIO_S = 0.06  # CPU stages' guess before they are measured (1.76 CPU-s per 30 s)
CAPTION = ["dreamy lo-fi", "piano", "rain on the window", "warm tape hiss", "slow groove",
           "female vocals", "jazz chords", "vinyl crackle", "late night city", "soft drums",
           "analog synth pads", "melancholic"]  # fmt: skip
LYRIC_LINES = ["[verse]", "hello morning light", "the city hums below", "[chorus]",
               "we walk the empty streets", "stay a little longer",
               "until the rain is gone"]  # fmt: skip
TRAFFIC = (1, 1, 2, 0.5, 1, 2, 1, 0.5, 1, 1, 2, 0.5)  # mixed traffic: clip lengths / duration


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
    """The real-size pipeline with random weights, on ``device`` in ``dtype``; and its sizes
    (billions of parameters per component)."""
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
    pipe = AceStepPipeline(
        tokenizer=train_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        **parts,
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, _sizes(pipe)


def _sizes(pipe: Any) -> dict[str, float]:
    return {
        name: round(sum(p.numel() for p in part.parameters()) / 1e9, 6)
        for name, part in pipe.components.items()
        if isinstance(part, torch.nn.Module)
    }


# ------------------------------------------------------------------ jobs


def equal_jobs(n: int, duration: float, offset: int = 0) -> list[Job]:
    """One batch key (caption, lyrics, length), ``n`` seeds."""
    return [
        Job("dreamy lo-fi, piano, rain", "[verse]\nhello morning light", duration, offset + i)
        for i in range(n)
    ]


def _lyrics(i: int) -> str:
    if i % 4 == 3:
        return INSTRUMENTAL
    return "\n".join(LYRIC_LINES[j % len(LYRIC_LINES)] for j in range(2 + 5 * (i % 7)))


def mixed_jobs(n: int, duration: float, offset: int = 0) -> list[Job]:
    """One length; captions and lyrics of different token lengths."""
    return [
        Job(", ".join(CAPTION[: 1 + (i * 5) % len(CAPTION)]), _lyrics(i), duration, offset + i)
        for i in range(n)
    ]


def traffic_jobs(duration: float) -> list[Job]:
    """Jobs of three lengths and various lyrics, interleaved as they might arrive."""
    shapes = mixed_jobs(len(TRAFFIC), duration, offset=1000)
    return [
        Job(job.caption, job.lyrics, duration * factor, job.seed)
        for job, factor in zip(shapes, TRAFFIC, strict=True)
    ]


# ------------------------------------------------------------------ timing


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


def _peak_gib() -> float | None:
    return (
        round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
    )


def _post(samples: np.ndarray, duration: float) -> bytes:
    data = audio.encode(samples, duration, "mp3")
    keccak256(data)
    return data


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


# ------------------------------------------------------------------ one variant


class VariantBench:
    """One variant's pipeline, a `Model` per mode on it, single runs cached per mode and job,
    what was measured, and the budget."""

    def __init__(self, name: str, pipe: Any, base: GeneratorSettings, args: Any, **model: Any):
        self.name, self.pipe, self.base, self.model_args = name, pipe, base, model
        self.duration, self.rounds, self.budget_s = args.duration, args.rounds, args.budget_s
        self.max_batch = max(args.batches)
        self.started = time.perf_counter()
        self.models: dict[str, Model] = {}
        self.jobs = {m: self.make_jobs(m, self.max_batch) for m in MODES}
        self.singles: dict[str, dict[int, np.ndarray]] = {m: {} for m in MODES}
        self.single_s: dict[str, float] = {}
        self.per_clip_s: dict[str, float] = {}
        self.oom: dict[str, int] = {}
        self.result: dict[str, Any] = {"batches": {}}

    def make_jobs(self, mode: str, n: int, offset: int = 0) -> list[Job]:
        """What the mode is measured with: see the module docstring."""
        return (equal_jobs if mode == "batched" else mixed_jobs)(n, self.duration, offset)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def model(self, mode: str) -> Model:
        """The mode's model, warmed up on first use (kernels, allocator)."""
        if mode not in self.models:
            settings = self.base.with_overrides(
                generator_batch_mode=mode, generator_max_batch=self.max_batch
            )
            model = Model(self.pipe, settings, **self.model_args)
            for seed in range(2):  # the first calls are slow on a CPU too
                model.generate([Job("warm up", "[verse]\nla", min(5.0, self.duration), seed)])
            self.models[mode] = model
        return self.models[mode]

    def step(self, labels: dict[str, Any], run: Callable[[], dict[str, Any]],
             predicted: float | None, skip: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Run one step unless it is skipped or would not fit the budget; print its line."""
        left = self.budget_s - self.elapsed()
        start = time.perf_counter()
        if skip is None and (left <= 0 or (predicted is not None and predicted * MARGIN > left)):
            skip = "budget"
        if skip is not None:
            row: dict[str, Any] = {"skipped": skip, "left_s": round(left, 1)}
            if predicted is not None:
                row["predicted_s"] = round(predicted, 1)
        else:
            try:
                row = run()
            except OutOfMemory as exc:
                row = {"error": f"out of memory: {exc}"}
                if "batch" in labels:
                    self.oom.setdefault(labels["mode"], labels["batch"])
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception as exc:  # a mode still being written must not stop the run
                row = {"error": f"{type(exc).__name__}: {exc}"}
            row["wall_s"] = round(time.perf_counter() - start, 2)
        emit({"variant": self.name, **labels, **row})
        return row

    # -------------------------------------------------------------- estimates

    def est_per_clip(self, mode: str) -> float:
        if mode in self.per_clip_s:
            return self.per_clip_s[mode]
        if mode == "invariant" and "batched" in self.per_clip_s and "batched" in self.single_s:
            return self.per_clip_s["batched"] * self.single_s[mode] / self.single_s["batched"]
        return self.single_s[mode]

    def _rounds(self, mode: str, batch: int) -> int:
        return self.rounds if mode != "sequential" or batch == 1 else 1

    def predict_batch(self, mode: str, batch: int) -> float | None:
        if mode not in self.single_s:
            return None
        missing = sum(i not in self.singles[mode] for i in range(batch)) if batch > 1 else 0
        clips = self._rounds(mode, batch) * batch
        return missing * self.single_s[mode] + clips * self.est_per_clip(mode)

    # -------------------------------------------------------------- steps

    def batch(self, mode: str, batch: int) -> None:
        oom = self.oom.get(mode)
        skip = f"out of memory at batch {oom}" if oom is not None and batch >= oom else None
        row = self.step(
            {"step": "batch", "mode": mode, "batch": batch},
            partial(self._batch, mode, batch),
            self.predict_batch(mode, batch),
            skip,
        )
        self.result["batches"].setdefault(str(batch), {})[mode] = row

    def _batch(self, mode: str, batch: int) -> dict[str, Any]:
        model, jobs, singles = self.model(mode), self.jobs[mode][:batch], self.singles[mode]
        for i in range(batch) if batch > 1 else ():
            if i not in singles:
                seconds, (singles[i],) = _timed(partial(model.generate, [jobs[i]]))
                self.single_s[mode] = min(seconds, self.single_s.get(mode, seconds))
        rounds = self._rounds(mode, batch)
        _reset_peak()
        times, outs = [], []
        for _ in range(rounds):
            seconds, out = _timed(partial(model.generate, jobs))
            times.append(seconds)
            outs.append(out)
        best = min(times)
        if batch == 1:
            singles.setdefault(0, outs[0][0])
            self.single_s.setdefault(mode, best)
        else:
            self.per_clip_s[mode] = best / batch
        pairs = [(out, singles[i]) for i, out in enumerate(outs[-1])]
        return {
            "s_per_clip": round(best / batch, 4),
            "real_time_factor": round(best / batch / self.duration, 5),
            "x_realtime": round(self.duration * batch / best, 2),
            "peak_gpu_mem_gib": _peak_gib(),
            "pipeline_calls": len(model.plan(jobs)),
            "bit_identical_to_single_runs": all(np.array_equal(a, b) for a, b in pairs),
            "max_abs_diff_to_single_runs": float(max(np.abs(a - b).max() for a, b in pairs)),
            "rounds": rounds,
        }

    def isolation(self) -> None:
        """The other modes' bytes after the invariant mode ran on the same pipeline."""
        modes = [m for m in ("sequential", "batched") if 0 in self.singles[m]]

        def run() -> dict[str, Any]:
            row = {}
            for mode in modes:
                (out,) = self.model(mode).generate([self.jobs[mode][0]])
                same = np.array_equal(out, self.singles[mode][0])
                row[f"{mode}_unchanged_after_invariant"] = bool(same)
            return row

        predicted = sum(self.single_s[m] for m in modes)
        skip = None if modes and "invariant" in self.models else "nothing to compare"
        self.result["isolation"] = self.step({"step": "isolation"}, run, predicted, skip)

    def cpu_stages(self, batch: int) -> None:
        # The invariant mode unless it failed at batch 1: then the batched mode.
        mode = "invariant" if "invariant" in self.single_s else "batched"
        post_clips, rounds = min(batch, 4), max(2, self.rounds)
        predicted = None
        if mode in self.single_s:
            post = POST_S_PER_AUDIO_S * self.duration
            workers = max(1, (os.cpu_count() or 2) - 1)
            gpu = (1 + rounds) * batch * self.est_per_clip(mode)
            predicted = gpu + post_clips * post + batch * post / workers
        run = partial(self._cpu_stages, mode, batch, post_clips, rounds)
        label = {"step": "cpu_stages", "mode": mode, "batch": batch}
        self.result["cpu_stages"] = self.step(label, run, predicted)

    def _cpu_stages(self, mode: str, batch: int, post_clips: int, rounds: int) -> dict[str, Any]:
        model, duration = self.model(mode), self.duration
        jobs = [self.make_jobs(mode, batch, 2000 * (r + 1)) for r in range(rounds + 1)]
        # 1. Serial: a batch on the GPU, then its clips one after another on the CPU.
        gpu, outs = _timed(partial(model.generate, jobs[0]))
        wall, cpu = time.perf_counter(), time.process_time()
        for samples in outs[:post_clips]:
            _post(samples, duration)
        wall = (time.perf_counter() - wall) / post_clips
        cpu = (time.process_time() - cpu) / post_clips
        gpu /= batch
        # 2. Overlapped: batch k is post-processed in a pool while batch k+1 is on the GPU. The
        #    GPU then idles only if the CPU work slows its calls down; a pool that cannot keep
        #    up shows as a backlog still draining after the last batch.
        workers = max(1, (os.cpu_count() or 2) - 1)
        busy = 0.0
        with ThreadPoolExecutor(workers) as pool:
            pending: list[Any] = []
            start = time.perf_counter()
            for r in range(rounds):
                seconds, outs = _timed(partial(model.generate, jobs[r + 1]))
                busy += seconds
                pending += [pool.submit(_post, s, duration) for s in outs]
            loop = time.perf_counter() - start
            for future in pending:
                future.result()
            drain = time.perf_counter() - start - loop
        return {
            "cpu_s_per_clip": round(cpu, 3),
            "post_wall_s_per_clip": round(wall, 3),
            "gpu_s_per_clip": round(gpu, 4),
            "gpu_idle_share": {
                "serial": round(wall / (gpu + wall), 3),
                "overlapped": round(max(0.0, loop - busy) / loop, 3),
                "overlapped_backlog_s": round(drain, 3),
            },
            "post_workers": workers,
            "cores_to_keep_up": round(cpu / gpu, 2),
            "clips_posted_serially": post_clips,
            "overlapped_rounds": rounds,
        }

    def mixed_traffic(self) -> None:
        mode, jobs = "invariant", traffic_jobs(self.duration)
        predicted = None
        if mode in self.single_s:
            predicted = self.rounds * sum(TRAFFIC) * self.est_per_clip(mode)

        def run() -> dict[str, Any]:
            calls = {m: len(self.model(m).plan(jobs)) for m in MODES}
            _reset_peak()
            best = min(
                _timed(partial(self.model(mode).generate, jobs))[0] for _ in range(self.rounds)
            )
            return {
                "jobs": len(jobs),
                "durations_s": sorted({j.duration_s for j in jobs}),
                "max_batch": self.max_batch,
                "pipeline_calls": calls[mode],
                "calls_by_mode": calls,
                "s_per_clip": round(best / len(jobs), 4),
                "s_per_audio_s": round(best / sum(j.duration_s for j in jobs), 5),
                "peak_gpu_mem_gib": _peak_gib(),
                "rounds": self.rounds,
            }

        label = {"step": "mixed_traffic", "mode": mode}
        self.result["mixed_traffic"] = self.step(label, run, predicted)

    def run(self, batches: list[int], best: int) -> dict[str, Any]:
        """Every step, in order of importance (see the module docstring)."""
        others = sorted(b for b in set(batches) if b not in (1, best))
        if 1 in batches:
            for mode in MODES:
                self.batch(mode, 1)
        if best != 1:
            for mode in ("batched", "invariant"):
                self.batch(mode, best)
        self.isolation()
        self.cpu_stages(best)
        self.mixed_traffic()
        for batch in others:
            for mode in ("batched", "invariant"):
                self.batch(mode, batch)
        for batch in [best, *others] if best != 1 else others:
            self.batch("sequential", batch)
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        return self.result


# ------------------------------------------------------------------ main


def bench_variant(variant: str, args: Any, device: torch.device) -> dict[str, Any]:
    started = time.perf_counter()
    if variant == "tiny":
        tiny = {"generator_tiny_dir": args.tiny_dir} if args.tiny_dir else {}
        base = GeneratorSettings(generator_model="tiny", generator_device="cpu", **tiny)
        loaded = load_pipeline(base)
        pipe, sizes = loaded.pipeline, _sizes(loaded.pipeline)
        model = {"checkpoint": loaded.checkpoint, "model_id": loaded.model_id}
        model |= {"device": loaded.device, "dtype": loaded.dtype}
    else:
        pipe, sizes = build_pipeline(variant, device)
        base = GeneratorSettings(generator_model="bench", generator_device=device.type)
        model = {"checkpoint": RANDOM, "model_id": f"random-{variant}"}
        model |= {"device": device, "dtype": torch.bfloat16}
    build_s = round(time.perf_counter() - started, 2)
    emit({"variant": variant, "step": "build", "params_b": sizes, "build_s": build_s})
    bench = VariantBench(variant, pipe, base, args, **model)
    bench.started = started  # the build counts against the budget
    best = args.best_batch if args.best_batch in args.batches else max(args.batches)
    result = {"params_b": sizes, "build_s": build_s, "best_batch": best}
    result |= bench.run(args.batches, best)
    del bench, pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="real-size ACE-Step 1.5 on one GPU")
    parser.add_argument(
        "--variants", nargs="+", default=["turbo", "xl-turbo"], choices=sorted(VARIANTS)
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--best-batch", type=int, default=16, help="measured right after 1")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=150.0, help="per variant")
    parser.add_argument("--cpu-smoke-test", action="store_true", help="the tiny model on CPU")
    parser.add_argument("--tiny-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.cpu_smoke_test:
        device = torch.device("cpu")
        args.variants, args.batches, args.best_batch = ["tiny"], [1, 2], 2
        args.duration, args.rounds = 2.0, 1
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        # What the generator sets for deterministic CUDA runs (generator.model).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        emit({"skipped": "no CUDA"})
        return
    report: dict[str, Any] = {
        "bench": "generator_gpu",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "dtype": "bfloat16" if device.type == "cuda" else "float32",
        "duration_s": args.duration,
        "steps": 8,
        "batches": args.batches,
        "budget_s": args.budget_s,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    emit({**report, "start": True})
    started = time.perf_counter()
    variants = {v: bench_variant(v, args, device) for v in args.variants}
    emit({**report, "summary": True, "elapsed_s": round(time.perf_counter() - started, 1),
          "variants": variants})  # fmt: skip


if __name__ == "__main__":
    main()
