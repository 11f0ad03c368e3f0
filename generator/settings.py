"""The generator's settings: `CommonSettings` plus ``ACESTEPS_GENERATOR_*``.

This is the only generator module that reads the environment. Nothing here imports torch, so
a bad value stops the service (``load_settings`` exits 2 naming the variable) before the model
is touched.

The model source, ``ACESTEPS_GENERATOR_MODEL``, is one of:

- a local directory holding a diffusers-format ACE-Step 1.5 checkpoint (``model_index.json``,
  ``transformer/``, ``condition_encoder/``, ``text_encoder/``, ``tokenizer/``, ``vae/``,
  ``scheduler/``), e.g. one fetched with ``huggingface-cli download <id> --local-dir DIR``;
- a Hugging Face hub id. The default, ``ACE-Step/acestep-v15-xl-turbo-diffusers``, is the
  diffusers-format turbo checkpoint that diffusers' own ACE-Step documentation and the
  ``AceStepPipeline`` docstring load (huggingface/diffusers PR #13787 fixed the docs to this id
  after the earlier ``ACE-Step/ACE-Step-v1-5-turbo`` turned out not to exist;
  ``ACE-Step/Ace-Step1.5`` is the original, non-diffusers layout). It is the XL (4 B DiT)
  turbo model: guidance-distilled, 8 steps;
- ``tiny``: a random-weight checkpoint in the same on-disk layout, built by code
  (`generator.tiny`) into ``ACESTEPS_GENERATOR_TINY_DIR``, for tests and the offline demo;
- ``auto``: the default hub id when its weights are here (pulled into ``ACESTEPS_MODELS_DIR``
  or in the Hugging Face cache); else, with CUDA and the hub reachable, it is downloaded and
  checked on first use (`generator.hub`); else the tiny checkpoint, with a banner saying how
  to get the real one.

That is the one model of a deployment without ``ACESTEPS_MODELS``; with it, each served model
has its own source and sampling settings (`acesteps.models`), and the generator serves them
all, loaded on first use and kept within ``ACESTEPS_GENERATOR_MEMORY_BUDGET``
(`generator.served`).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator

from acesteps.models import Catalog, ModelSpec, ModelsSettings
from acesteps.presets import PresetsSettings
from acesteps.settings import CACHE_DIR, CommonSettings

__all__ = ["AUTO_MODEL", "DEFAULT_MODEL_ID", "TINY_MODEL", "GeneratorSettings", "parse_bytes"]

DEFAULT_MODEL_ID: Final = "ACE-Step/acestep-v15-xl-turbo-diffusers"
TINY_MODEL: Final = "tiny"
AUTO_MODEL: Final = "auto"
"""The default hub id when its weights are here or can be fetched for a GPU, else the tiny
checkpoint (local runs)."""

_UNITS: Final = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                 "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_bytes(value: object) -> object:
    """``24GiB``, ``500 MB``, ``1.5e9`` or a plain number of bytes -> int bytes."""
    if isinstance(value, str):
        found = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", value)
        if not found or found.group(2).lower() not in _UNITS:
            raise ValueError(f"expected bytes such as 24GiB, 500MB or 1000000, got {value!r}")
        return int(float(found.group(1)) * _UNITS[found.group(2).lower()])
    return value


def _default_instance_id() -> str:
    # Stable across restarts on one host, distinct across hosts. Two workers on one host must
    # set ACESTEPS_GENERATOR_INSTANCE_ID, or their transactional ids fence each other.
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"generator-{host or 'local'}"[:100]


class GeneratorSettings(CommonSettings, ModelsSettings, PresetsSettings):
    """Everything the generator needs beyond the shared settings."""

    # ------------------------------------------------------------------ model
    generator_model: str = Field(
        DEFAULT_MODEL_ID,
        min_length=1,
        description="local checkpoint directory, hub id, 'tiny' (random test checkpoint) or "
        "'auto' (the default hub id if here, or downloaded on first use with CUDA; else tiny)",
    )
    generator_model_revision: str | None = Field(
        None, description="hub revision (branch, tag or commit) to pin; ignored for directories"
    )
    generator_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when available, else cpu"
    )
    generator_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on cuda, float32 on cpu"
    )
    generator_steps: int = Field(8, ge=1, le=200, description="denoising steps (turbo: 8)")
    generator_guidance_scale: float | None = Field(
        None,
        ge=0,
        le=30,
        description="None: 1.0 for turbo (guidance-distilled) checkpoints, 7.0 otherwise",
    )
    generator_shift: float = Field(3.0, gt=0, le=10, description="timestep schedule shift")
    generator_vocal_language: str = Field(
        "en", pattern=r"^[a-z]{2,3}$", description="language code given to the lyric encoder"
    )
    generator_torch_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU intra-op threads; fix it to make CPU output independent of core count",
    )

    generator_memory_budget: int | None = Field(
        None,
        ge=0,
        description="bytes the loaded models' weights may take together (device memory on "
        "CUDA, process memory on CPU), e.g. 40GiB: a model needed beyond it evicts the least "
        "recently used ones first; unset: no limit",
    )
    models_dir: Path = Field(
        CACHE_DIR / "models",
        description="where `acesteps models pull` and first-run downloads put checkpoints",
    )

    # ------------------------------------------------------------------ batching
    generator_max_batch: int = Field(4, ge=1, le=64, description="jobs taken per model call")
    generator_max_wait_ms: int = Field(
        50, ge=0, le=60_000, description="how long the worker waits to fill a batch"
    )
    generator_batch_mode: Literal["sequential", "batched", "invariant"] = Field(
        "sequential",
        description=(
            "sequential: the jobs of a batch run one by one, so a track's bytes never depend on "
            "its batch; batched: one pipeline call per group of equal batch keys (faster on a "
            "GPU, but not bit-identical to a single run); invariant: one call per group of equal "
            "length, with batch-invariant kernels and masked caption/lyric padding, so every "
            "track has exactly the bytes of its single run in that mode (generator.invariant)"
        ),
    )
    generator_vae_tiling_above_s: float = Field(
        60.0,
        ge=0,
        description="decode clips longer than this with VAE tiling (bounds VAE memory)",
    )

    # ------------------------------------------------------------------ tiny checkpoint
    generator_tiny_dir: Path = Field(
        CACHE_DIR / "models" / "tiny-acestep",
        description="where the tiny random-weight checkpoint is built and cached",
    )

    # ------------------------------------------------------------------ content policy
    generator_policy_enabled: bool = Field(True, description="refuse prompts the policy flags")
    generator_policy_file: Path | None = Field(
        None, description="JSON file with extra rules, artist names and allow patterns"
    )

    # ------------------------------------------------------------------ identity
    generator_instance_id: str = Field(
        default_factory=_default_instance_id,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="stable, unique per instance: the base of its Kafka transactional id",
    )

    @field_validator("generator_model")
    @classmethod
    def _strip_model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("empty model source")
        return value

    @field_validator("generator_memory_budget", mode="before")
    @classmethod
    def _bytes(cls, value: object) -> object:
        return None if value == "" else parse_bytes(value)

    def single_model(self) -> ModelSpec:
        """The one model of a deployment without ``ACESTEPS_MODELS``."""
        return ModelSpec(
            source=self.generator_model,
            revision=self.generator_model_revision,
            steps=self.generator_steps,
            guidance=self.generator_guidance_scale,
            shift=self.generator_shift,
        )

    def served(self) -> Catalog:
        """The models this generator serves (`acesteps.models`)."""
        return self.catalog(self.single_model())

    @field_validator("generator_policy_file")
    @classmethod
    def _policy_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value
