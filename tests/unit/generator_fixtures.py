"""Session fixtures for the generator tests: the tiny checkpoint and the model loaded from it.

The checkpoint is built by code into a temporary directory once per session (offline, CPU,
under a second) and loaded through the production loader, `generator.model.load_pipeline`,
exactly as ``ACESTEPS_GENERATOR_MODEL=tiny`` does in the service. Import the fixtures into a
test module with ``from tests.unit.generator_fixtures import *``-style explicit imports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.model import Model, load_pipeline
from generator.settings import GeneratorSettings
from generator.tiny import build_tiny

__all__ = ["TINY_B_SEED", "tiny_b_dir", "tiny_dir", "tiny_model", "tiny_settings", "two_models"]

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
