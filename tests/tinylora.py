"""A tiny LoRA adapter for the tiny checkpoint, built by code (for the style preset tests).

Random, non-zero low-rank weights on the DiT's attention projections, from a seeded generator,
saved as diffusers names a LoRA (``pytorch_lora_weights.safetensors``, ``transformer.`` keys,
its adapter metadata): the same seed gives the same file, another seed another adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AceStepTransformer1DModel
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

__all__ = ["build_tiny_lora"]


def build_tiny_lora(checkpoint: Path, dest: Path, *, seed: int = 1, rank: int = 4) -> Path:
    """Write an adapter of ``checkpoint``'s DiT into ``dest``; returns the file."""
    transformer = AceStepTransformer1DModel.from_pretrained(str(checkpoint / "transformer"))
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False
    )
    transformer = inject_adapter_in_model(config, transformer)
    generator = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(transformer)
    weights = {
        name: 0.5 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        for name, tensor in sorted(state.items())
    }
    config_dict = config.to_dict()
    config_dict["target_modules"] = sorted(config_dict["target_modules"])
    # diffusers' own writer adds a second metadata key, which safetensors writes in hash
    # order: one key keeps the file's bytes a function of the seed.
    metadata = {f"transformer.{k}": v for k, v in config_dict.items()}
    dest.mkdir(parents=True, exist_ok=True)
    file = dest / "pytorch_lora_weights.safetensors"
    save_file(
        {f"transformer.{name}": tensor for name, tensor in weights.items()},
        str(file),
        metadata={"lora_adapter_metadata": json.dumps(metadata, sort_keys=True)},
    )
    return file
