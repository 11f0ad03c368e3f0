"""The torch side of an edit's pipeline call (`generator.editing` stays free of torch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from generator.editing import MODEL_RATE, Edit

__all__ = ["edit_arguments", "source_noise", "source_seed"]


def edit_arguments(edit: Edit, frames: int, latents_per_second: float) -> dict[str, Any]:
    """The pipeline's task arguments of ``edit`` for ``frames`` latent frames, its source a
    ``[2, samples]`` tensor of exactly those frames at 48 kHz."""
    samples = round(frames * MODEL_RATE / latents_per_second)
    arguments = edit.pipeline_kwargs(samples)
    arguments["src_audio"] = torch.from_numpy(np.asarray(arguments["src_audio"]))
    return arguments


@contextlib.contextmanager
def source_noise(edit: Edit | None, device: torch.device) -> Iterator[None]:
    """The pipeline encodes an edit's source with the VAE's ``latent_dist.sample()``, which
    draws from torch's global generators: they are seeded here from the source's audioHash
    (its first 8 bytes), so the source's latents depend on the source alone, never on the
    job's seed or its batch, and restored afterwards."""
    if edit is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(source_seed(edit.audio_hash))
        yield


def source_seed(audio_hash: str) -> int:
    """The seed of an edit's source encoding: the audioHash's first 8 bytes, big-endian."""
    return int(audio_hash.removeprefix("0x")[:16], 16)
