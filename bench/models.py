"""Served models on the CPU, as one JSON object: each tiny model's load time, and (optionally)
the real-size model's speed on a CPU.

Usage: ``python bench/models.py [--real-size]``

1. ``tiny``: two tiny checkpoints that differ (the tiny checkpoint's seed and another), built
   into a temporary directory, served by one `generator.served.ServedModels` as ``tiny-a`` and
   ``tiny-b`` (4 steps). For each, one load through the production path (locate, weights
   digest, ``from_pretrained``, placement): ``load_s`` with the digest computed cold (a first
   start), ``reload_s`` after an eviction with the digest cache warm (what a model that comes
   back costs), the weights' bytes and the estimate from the safetensors headers that the
   memory budget uses, and one 5 s clip's ``clip_s``.
2. ``--real-size``: the non-XL ACE-Step 1.5 turbo at its real size (DiT 1.58 B, condition
   encoder 0.61 B, Qwen3 0.6 B, VAE 0.17 B) with random weights, built by
   ``bench/generator_gpu.py`` in fp32 on the CPU, as the generator runs on a CPU; one 5 s clip
   of 8 steps through `generator.model.Model.generate` (random weights take the same time as
   real ones). It needs about 13 GB of memory; the XL default model (DiT ~4 B) would need
   about 24 GB and is not run here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import resource
import tempfile
import time
from typing import Any

import torch

from generator.jobs import Job
from generator.model import Checkpoint, Model, estimate_bytes
from generator.provenance import environment
from generator.served import ServedModels
from generator.settings import GeneratorSettings
from generator.tiny import SEED, build_tiny

JOB = Job("dreamy lo-fi, piano, rain", "[verse]\nhello morning light", 5.0, 42)


def _tiny(directory: Path) -> dict[str, Any]:
    a = build_tiny(directory / "tiny-a")
    b = build_tiny(directory / "tiny-b", seed=SEED + 1)
    settings = GeneratorSettings(
        generator_device="cpu",
        generator_tiny_dir=a,
        models={"tiny-a": "tiny", "tiny-b": {"source": str(b), "steps": 4}},  # type: ignore[arg-type]
    )
    models = ServedModels.from_settings(settings)
    out: dict[str, Any] = {}
    for name, path in (("tiny-a", a), ("tiny-b", b)):
        start = time.perf_counter()
        model = models.loaded(name)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        models.generate([Job(JOB.caption, JOB.lyrics, JOB.duration_s, JOB.seed, model=name)])
        clip_s = time.perf_counter() - start
        out[name] = {
            "load_s": round(load_s, 3),
            "weights_bytes": model.memory_bytes(),
            "estimated_bytes": estimate_bytes(path, torch.float32),
            "weights_digest": model.checkpoint.weights_digest,
            "steps": model.steps,
            "clip_5s_s": round(clip_s, 3),
        }
    # A model that comes back after an eviction: its digest is cached by now.
    for name in ("tiny-a", "tiny-b"):
        models._evict(name)
        start = time.perf_counter()
        models.loaded(name)
        out[name]["reload_s"] = round(time.perf_counter() - start, 3)
    return out


def _real_size() -> dict[str, Any]:
    from generator_gpu import build_pipeline  # bench/generator_gpu.py

    start = time.perf_counter()
    pipe, sizes = build_pipeline("turbo", torch.device("cpu"), torch.float32)
    build_s = time.perf_counter() - start
    settings = GeneratorSettings(generator_model="bench", generator_device="cpu")
    random = Checkpoint("random", None, Path("."), "sha256:" + "0" * 64)
    model = Model(
        pipe, settings, device=torch.device("cpu"), dtype=torch.float32, model_id="random-turbo",
        checkpoint=random,
    )  # fmt: skip
    start = time.perf_counter()
    steps: list[float] = []
    model.generate([JOB], on_step=lambda done, total: steps.append(time.perf_counter()))
    clip_s = time.perf_counter() - start
    return {
        "variant": "turbo (non-XL), random weights, fp32",
        "parameters_b": sizes,
        "build_s": round(build_s, 1),
        "steps": model.steps,
        "clip_5s_s": round(clip_s, 1),
        "first_step_s": round(steps[0] - start, 1) if steps else None,
        "per_step_s": round((steps[-1] - steps[0]) / max(len(steps) - 1, 1), 2) if steps else None,
        "realtime_factor": round(JOB.duration_s / clip_s, 4),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="served models on the CPU")
    parser.add_argument("--real-size", action="store_true", help="also the real-size turbo")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": {
            "cpu": environment(torch.device("cpu")).device.name,
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["tiny"] = _tiny(Path(tmp))
    if args.real_size:
        result["real_size_cpu"] = _real_size()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
