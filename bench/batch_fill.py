"""How many jobs share a pipeline call under realistic traffic, per batch mode, as JSON lines.

Usage: ``python bench/batch_fill.py [--requests 2000] [--seed 0] [--max-batch 8 16 32]``.
Pure Python (no torch, no model): it draws requests, cuts them into batches as the worker
takes them, and groups each batch the way `generator.model.Model.plan` does in each mode.

The three modes group a batch by these keys (`generator.settings`, ``generator_batch_mode``):

- ``sequential``: every job alone (one call per job);
- ``batched``: (latent frames, caption tokens, lyric tokens): equal shapes, no padding;
- ``invariant``: (latent frames,): captions and lyrics of other token lengths are padded.

Latent frames are ``ceil(duration_s * 25)``. The other parts of the real key (conditioning,
served model, preset, edit) are taken equal for every request, so both grouping modes are
shown at their best: real traffic splits them further.

**The traffic** (``--requests`` requests, drawn with ``random.Random(--seed)``):

- durations, three models, each 10-240 s:
  ``continuous_uniform``: uniform, any 0.1 s value;
  ``continuous_skewed``: log-uniform, any 0.1 s value (median ~49 s: short clips are asked for
  more often than long ones, with a long tail up to 240 s);
  ``presets``: the lengths hosted music services offer as choices, weighted
  15 s: 0.15, 30 s: 0.35, 60 s: 0.20, 120 s: 0.12, 180 s: 0.10, 240 s: 0.08 (30 s is this
  service's default duration and the usual preview length, 60 s the next common short
  choice; full-song lengths are asked for less often, the longest least);
- caption tokens: triangular over 10-120 with its mode at 25 (mean ~52): most prompts are a
  short list of descriptors, a few are long descriptions;
- lyric tokens: 30 % instrumentals (0 tokens; the real pipeline sees one constant marker,
  equal for all of them); the others sing ``U(1.5, 8)`` tokens per second of the clip
  (a sparse chorus to dense verses), clipped to 8-2000;
- traffic ``independent``: every request is one track; ``with_variations``: 15 % of the
  requests ask for 2-4 variations (uniform), which arrive consecutively as jobs of equal
  caption, lyrics and duration and other seeds (`acesteps.variations`), the one case where
  the batched mode's key repeats by construction.

**The worker** takes up to ``max_batch`` jobs at a time (8, 16, 32): modelled as consecutive
chunks of the arrival order, i.e. a queue that always has a full batch waiting (a saturated
worker; under light load batches are smaller and share even less).

Output: one JSON line per (traffic, duration model, max_batch, mode) with ``jobs``,
``pipeline_calls``, ``mean_jobs_per_call``, ``fill`` (mean jobs per call / max_batch),
``share_alone`` (jobs that ran in a call of their own) and ``largest_call``; then one summary
line: ``mean_jobs_per_call`` as traffic -> duration model -> max_batch -> mode.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

LATENTS_PER_SECOND = 25
MIN_S, MAX_S = 10.0, 240.0
PRESET_WEIGHTS = {15: 0.15, 30: 0.35, 60: 0.20, 120: 0.12, 180: 0.10, 240: 0.08}
INSTRUMENTAL_SHARE = 0.30
VARIATIONS_SHARE = 0.15


@dataclass(frozen=True)
class Job:
    duration_s: float
    text_tokens: int
    lyric_tokens: int

    @property
    def frames(self) -> int:
        return math.ceil(self.duration_s * LATENTS_PER_SECOND)


def _uniform(rng: random.Random) -> float:
    return round(rng.uniform(MIN_S, MAX_S), 1)


def _skewed(rng: random.Random) -> float:
    return round(math.exp(rng.uniform(math.log(MIN_S), math.log(MAX_S))), 1)


def _preset(rng: random.Random) -> float:
    return float(rng.choices(list(PRESET_WEIGHTS), weights=list(PRESET_WEIGHTS.values()))[0])


DURATIONS: dict[str, Callable[[random.Random], float]] = {
    "continuous_uniform": _uniform,
    "continuous_skewed": _skewed,
    "presets": _preset,
}


def _request(rng: random.Random, duration: Callable[[random.Random], float]) -> Job:
    duration_s = duration(rng)
    text = round(rng.triangular(10, 120, 25))
    if rng.random() < INSTRUMENTAL_SHARE:
        lyrics = 0
    else:
        lyrics = min(2000, max(8, round(duration_s * rng.uniform(1.5, 8.0))))
    return Job(duration_s, text, lyrics)


def traffic(
    n: int, seed: int, duration: Callable[[random.Random], float], variations: bool
) -> list[Job]:
    """``n`` requests in arrival order, as jobs (a request with variations is several)."""
    rng = random.Random(seed)
    jobs: list[Job] = []
    for _ in range(n):
        job = _request(rng, duration)
        tracks = rng.randint(2, 4) if variations and rng.random() < VARIATIONS_SHARE else 1
        jobs += [job] * tracks
    return jobs


KEYS: dict[str, Callable[[int, Job], Hashable]] = {
    "sequential": lambda i, job: i,  # every job its own call
    "batched": lambda i, job: (job.frames, job.text_tokens, job.lyric_tokens),
    "invariant": lambda i, job: job.frames,
}


def calls(jobs: list[Job], max_batch: int, mode: str) -> list[int]:
    """The size of each pipeline call: chunks of ``max_batch`` in arrival order, each grouped
    by the mode's key (a group never exceeds its chunk, so never ``max_batch``)."""
    key = KEYS[mode]
    sizes: list[int] = []
    for start in range(0, len(jobs), max_batch):
        groups: dict[Hashable, int] = {}
        for i, job in enumerate(jobs[start : start + max_batch], start):
            k = key(i, job)
            groups[k] = groups.get(k, 0) + 1
        sizes += groups.values()
    return sizes


def measure(jobs: list[Job], max_batch: int, mode: str) -> dict[str, Any]:
    sizes = calls(jobs, max_batch, mode)
    mean = len(jobs) / len(sizes)
    return {
        "jobs": len(jobs),
        "pipeline_calls": len(sizes),
        "mean_jobs_per_call": round(mean, 3),
        "fill": round(mean / max_batch, 3),
        "share_alone": round(sum(1 for s in sizes if s == 1) / len(jobs), 3),
        "largest_call": max(sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="batch fill per batch mode, simulated traffic")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()
    started = time.perf_counter()
    summary: dict[str, Any] = {}
    for variations in (False, True):
        kind = "with_variations" if variations else "independent"
        for name, duration in DURATIONS.items():
            jobs = traffic(args.requests, args.seed, duration, variations)
            for max_batch in args.max_batch:
                for mode in KEYS:
                    row = measure(jobs, max_batch, mode)
                    line = {"traffic": kind, "durations": name, "max_batch": max_batch}
                    print(json.dumps({**line, "mode": mode, **row}), flush=True)
                    summary.setdefault(kind, {}).setdefault(name, {}).setdefault(
                        str(max_batch), {}
                    )[mode] = row["mean_jobs_per_call"]
    print(
        json.dumps(
            {
                "bench": "batch_fill",
                "summary": True,
                "requests": args.requests,
                "seed": args.seed,
                "mean_jobs_per_call": summary,
                "elapsed_s": round(time.perf_counter() - started, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
