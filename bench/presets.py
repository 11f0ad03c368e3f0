"""What a style preset's LoRA adapter costs the generator, as one JSON object.

Usage: ``python bench/presets.py [--runs 5] [--duration 10] [--rank 16]``

On the CPU with the tiny checkpoint and a random adapter of rank ``--rank`` on the DiT's
attention projections (`tests.tinylora`, as the preset tests build it), in one run:

- ``first_load_s``: the first job of a preset (hash the file, load it into the DiT);
- ``call_s``: the best of ``--runs`` model calls (one job, interleaved) without an adapter,
  with one (unfused: the base weights untouched, the low-rank path added), and right after
  switching from another adapter, and their ratios to the plain call;
- ``same_bytes_without_adapter``: the plain job's PCM before any adapter was loaded equals its
  PCM after (what keeps tracks without a preset byte-identical).

The tiny DiT is ~100 k parameters, so the absolute times say little about a real checkpoint;
the ratios say what the unfused path adds relative to the model's own work at that size.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import platform
import tempfile
import time
from math import inf

import torch

from acesteps.presets import PresetsSettings
from generator.jobs import Job, Style
from generator.model import Model, load_pipeline
from generator.pipeline import pcm_keccak256
from generator.presets import Presets
from generator.settings import GeneratorSettings
from tests.tinylora import build_tiny_lora


def _timed(model: Model, job: Job) -> float:
    started = time.perf_counter()
    model.generate([job])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    settings = GeneratorSettings(generator_model="tiny", generator_device="cpu")
    model = load_pipeline(settings)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            name: build_tiny_lora(model.checkpoint.path, root / name, seed=seed, rank=args.rank)
            for name, seed in (("a", 1), ("b", 2))
        }
        table = {name: {"lora": str(file)} for name, file in files.items()}
        presets = Presets(PresetsSettings(presets=table).preset_catalog())  # type: ignore[arg-type]

        def job(style: Style | None) -> Job:
            return Job(
                caption="a calm piano piece", lyrics="[Instrumental]",
                duration_s=args.duration, seed=5, adapter=style.adapter if style else None,
            )  # fmt: skip

        plain, a, b = (
            job(None),
            job(presets.style("a", "default")),
            job(presets.style("b", "default")),
        )
        (raw,) = model.generate([plain])
        plain_pcm = pcm_keccak256(raw)
        started = time.perf_counter()
        model.generate([a])
        first = time.perf_counter() - started
        model.generate([b])  # loaded too: the switch below is from b to a
        # Interleaved, best of each: a busy machine slows all three alike.
        times: dict[str, float] = {"plain": inf, "adapter": inf, "adapter_after_switch": inf}
        for _ in range(args.runs):
            times["plain"] = min(times["plain"], _timed(model, plain))
            times["adapter_after_switch"] = min(times["adapter_after_switch"], _timed(model, a))
            times["adapter"] = min(times["adapter"], _timed(model, a))
            model.generate([b])
        (raw,) = model.generate([plain])
        after_pcm = pcm_keccak256(raw)
    print(
        json.dumps(
            {
                "bench": "presets",
                "device": "cpu",
                "cpu": platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "duration_s": args.duration,
                "rank": args.rank,
                "runs": args.runs,
                "first_load_s": round(first, 4),
                "call_s": {name: round(t, 4) for name, t in times.items()},
                "ratio_to_plain": {
                    name: round(t / times["plain"], 3)
                    for name, t in times.items()
                    if name != "plain"
                },
                "same_bytes_without_adapter": plain_pcm == after_pcm,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
