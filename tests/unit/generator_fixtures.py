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

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]


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
