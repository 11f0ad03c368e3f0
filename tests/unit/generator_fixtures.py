"""Session fixtures for the generator tests: the tiny checkpoint and the model loaded from it.

The checkpoint is built by code into a temporary directory once per session (offline, CPU,
under a second) and loaded through the production loader, `generator.model.load_pipeline`,
exactly as ``ACESTEPS_GENERATOR_MODEL=tiny`` does in the service. Import the fixtures into a
test module with ``from tests.unit.generator_fixtures import *``-style explicit imports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.manifest import Manifest
from acesteps.messages import GenerationRequest
from generator import audio
from generator.editing import splicer
from generator.jobs import Job
from generator.model import Model, load_pipeline
from generator.pipeline import Encoded, pcm_keccak256
from generator.provenance import build_manifest
from generator.settings import GeneratorSettings
from generator.tiny import build_tiny

__all__ = [
    "TINY_B_SEED",
    "made",
    "tiny_b_dir",
    "tiny_dir",
    "tiny_model",
    "tiny_settings",
    "two_models",
]

TINY_B_SEED = 20_240_916
"""The second tiny checkpoint's weights seed: another model, another weights digest."""


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models") / "tiny-acestep"


@pytest.fixture(scope="session")
def tiny_settings(tiny_dir: Path) -> GeneratorSettings:
    return GeneratorSettings(
        generator_model="tiny",
        generator_tiny_dir=tiny_dir,
        generator_device="cpu",
        generator_dtype="auto",
        generator_batch_mode="sequential",
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_settings: GeneratorSettings) -> Model:
    return load_pipeline(tiny_settings)


@pytest.fixture(scope="session")
def tiny_b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny checkpoint, other random weights, in a directory of its own."""
    return build_tiny(tmp_path_factory.mktemp("models-b") / "tiny-b", seed=TINY_B_SEED)


@pytest.fixture(scope="session")
def two_models(tiny_settings: GeneratorSettings, tiny_b_dir: Path) -> GeneratorSettings:
    """Settings serving two models: ``tiny-a`` (the tiny checkpoint, 8 steps, the default)
    and ``tiny-b`` (the second checkpoint, 4 steps)."""
    return tiny_settings.with_overrides(
        models={"tiny-a": "tiny", "tiny-b": {"source": str(tiny_b_dir), "steps": 4}}
    )


def made(
    model: Model,
    request: GenerationRequest,
    job: Job,
    *,
    mp3_encoder: str | None = None,
    recorded: bool = True,
) -> tuple[Manifest, bytes]:
    """``job`` run on ``model`` and encoded as the worker does, and its manifest: (manifest,
    file bytes). ``mp3_encoder`` picks another MP3 encoder; ``recorded=False`` leaves it out
    of the manifest, as manifests made before the field did."""
    (raw,) = model.generate([job])
    encoder = audio.file_encoder(request.format, mp3_encoder)
    data = audio.encode(raw, job.duration_s, request.format, encoder, splicer(job.edit))
    encoded = Encoded(
        data,
        keccak256_hex(data),
        cid_of_bytes(data),
        {},
        pcm_keccak256(raw),
        raw.shape[-1],
        1,
        encoder=encoder if recorded else None,
    )
    return build_manifest(request, job, model, encoded), data
