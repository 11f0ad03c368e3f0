"""The determinism checks of `test_generator_model`, on CUDA in bf16 (skipped without CUDA).

The tiny checkpoint is loaded through the production loader with ``generator_device=cuda``
and the automatic dtype (bf16 on CUDA). Same request -> same audioHash; a track's bytes do not
depend on what shares its batch (the default sequential mode); seeds change the audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acesteps.hashing import keccak256_hex
from generator import audio
from generator.jobs import INSTRUMENTAL, Job
from generator.model import Model, load_pipeline
from generator.settings import GeneratorSettings
from tests.unit.generator_fixtures import tiny_dir

__all__ = ["tiny_dir"]  # fixture, re-exported for pytest

pytestmark = pytest.mark.gpu

JOB = Job("dreamy lo-fi, piano, rain", "[verse]\nhello morning light", 5.0, 1234)


@pytest.fixture(scope="module")
def cuda_model(tiny_dir: Path) -> Model:
    settings = GeneratorSettings(
        generator_model="tiny", generator_tiny_dir=tiny_dir, generator_device="cuda"
    )
    return load_pipeline(settings)


def _hashes(samples: np.ndarray, duration: float) -> tuple[str, str]:
    mp3 = keccak256_hex(audio.encode(samples, duration, "mp3"))
    return mp3, keccak256_hex(audio.encode(samples, duration, "wav"))


def test_loads_on_cuda_in_bf16(cuda_model: Model) -> None:
    assert cuda_model.device.type == "cuda" and cuda_model.dtype == torch.bfloat16
    for component in cuda_model.pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            assert {p.dtype for p in component.parameters()} == {torch.bfloat16}
            assert {p.device.type for p in component.parameters()} == {"cuda"}


def test_the_same_request_twice_gives_the_same_audio_hash_on_cuda(cuda_model: Model) -> None:
    first, second = (cuda_model.generate([JOB])[0] for _ in range(2))
    assert _hashes(first, 5.0) == _hashes(second, 5.0)


def test_a_track_does_not_depend_on_its_batch_on_cuda(cuda_model: Model) -> None:
    (alone,) = cuda_model.generate([JOB])
    batch = [
        Job("thunderous cinematic orchestral epic", "[chorus]\nsing it loud", 5.0, 1),
        JOB,
        Job("calm", INSTRUMENTAL, 7.5, 2),
        Job("jazz trio night", "[verse]\nhello", 5.0, 1234),
    ]
    assert _hashes(cuda_model.generate(batch)[1], 5.0) == _hashes(alone, 5.0)


def test_different_seeds_give_different_audio_on_cuda(cuda_model: Model) -> None:
    a, b = cuda_model.generate([JOB, Job(JOB.caption, JOB.lyrics, JOB.duration_s, JOB.seed + 1)])
    assert np.abs(a - b).max() > 1e-3


def test_the_invariant_mode_gives_single_run_bytes_to_a_padded_batch_on_cuda(
    tiny_dir: Path,
) -> None:
    """The Triton kernels at work: prompts of other token lengths share one call, and each
    job gets exactly its single run's bytes in that mode."""
    settings = GeneratorSettings(
        generator_model="tiny",
        generator_tiny_dir=tiny_dir,
        generator_device="cuda",
        generator_batch_mode="invariant",
        generator_max_batch=8,
    )
    model = load_pipeline(settings)
    jobs = [
        JOB,
        Job("thunderous cinematic orchestral epic with choir", INSTRUMENTAL, 5.0, 1),
        Job("jazz", "[verse]\nhello\n[chorus]\nsing it loud, sing it again", 5.0, 2),
    ]
    assert model.plan(jobs) == [[0, 1, 2]]
    together = model.generate(jobs)
    for job, samples in zip(jobs, together, strict=True):
        assert _hashes(samples, 5.0) == _hashes(model.generate([job])[0], 5.0), job
