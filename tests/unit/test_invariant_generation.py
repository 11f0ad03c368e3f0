"""The ``invariant`` batch mode end to end on the tiny checkpoint (CPU).

Four different requests (other seeds, captions and lyrics of other token lengths, equal and
unequal durations) generated together give exactly the bytes of their single runs; jobs whose
prompts differ in length share a call; without the padding masks they would not match; a
track made in this mode is reproduced with this mode's kernels; a model that needs an op the
mode has no kernel for fails with a reason instead of losing invariance.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from acesteps.hashing import keccak256_hex
from generator import audio
from generator.errors import GenerationFailedError, ModelUnavailable
from generator.invariant import mode as invariant_mode
from generator.jobs import Job
from generator.model import Model, load_pipeline
from generator.reproduce import reproduce
from generator.settings import GeneratorSettings
from generator.tiny import build_tiny
from tests.factories import http_request
from tests.unit.generator_fixtures import made, tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]  # fixtures, re-exported for pytest

JOBS = (
    Job("lofi hip hop", "[verse]\nla la la", 2.0, 1),
    Job("a much longer caption: jazz piano, upright bass and brushed drums at night", "", 2.0, 2),
    Job("rock", "[chorus]\nwe sing it loud\nwe sing it again and again and again", 2.0, 3),
    Job("ambient pads", "[verse]\nhello", 1.5, 4),
)  # fmt: skip


def _invariant(model: Model) -> Model:
    return model.with_settings(
        model.settings.with_overrides(generator_batch_mode="invariant", generator_max_batch=8)
    )


@pytest.fixture(scope="module")
def invariant(tiny_model: Model) -> Model:
    return _invariant(tiny_model)


@pytest.fixture(scope="module")
def singles(invariant: Model) -> list[np.ndarray]:
    return [invariant.generate([job])[0] for job in JOBS]


def test_prompts_of_other_lengths_share_a_call_and_only_the_length_splits(
    invariant: Model, tiny_model: Model
) -> None:
    keys = [tiny_model.batch_key(job) for job in JOBS[:3]]
    assert len({(k.text_tokens, k.lyric_tokens) for k in keys}) == 3  # three shapes
    assert invariant.plan(list(JOBS)) == [[0, 1, 2], [3]]


def test_four_different_requests_together_give_their_single_runs_bytes(
    invariant: Model, singles: list[np.ndarray]
) -> None:
    together = invariant.generate(list(JOBS))
    for job, batch, alone in zip(JOBS, together, singles, strict=True):
        assert np.array_equal(batch, alone), job
        for fmt in ("wav", "mp3"):
            assert keccak256_hex(audio.encode(batch, job.duration_s, fmt)) == keccak256_hex(
                audio.encode(alone, job.duration_s, fmt)
            )
    # The same jobs in another order and another grouping: the same bytes again.
    again = invariant.generate([JOBS[2], JOBS[0]])
    assert np.array_equal(again[0], singles[2]) and np.array_equal(again[1], singles[0])


def test_without_the_padding_masks_padded_jobs_would_differ(
    invariant: Model, singles: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("generator.model.padding_masks", lambda _p: contextlib.nullcontext())
    together = invariant.generate(list(JOBS[:3]))
    assert not all(np.array_equal(a, b) for a, b in zip(together, singles, strict=False))


def test_guidance_stacks_the_mask_for_its_unconditional_half(tmp_path: Path) -> None:
    """A base checkpoint (guidance 7: conditional and unconditional halves in one DiT call,
    APG norms) keeps the promise too."""
    directory = build_tiny(tmp_path / "tiny-base", turbo=False)
    settings = GeneratorSettings(
        generator_model=str(directory),
        generator_device="cpu",
        generator_batch_mode="invariant",
        generator_max_batch=8,
        generator_steps=3,
    )
    base = load_pipeline(settings)
    assert base.guidance_scale > 1.0
    jobs = list(JOBS[1:3])  # two lengths of caption and lyrics
    together = base.generate(jobs)
    for job, batch in zip(jobs, together, strict=True):
        assert np.array_equal(batch, base.generate([job])[0]), job


def test_a_track_made_in_this_mode_is_reproduced_with_its_kernels(invariant: Model) -> None:
    request = http_request("7c")
    manifest, _ = made(invariant, request, Job.from_request(request))
    assert manifest.sampling.batch_mode == "invariant"
    outcome = reproduce(manifest, invariant.settings)
    assert outcome.status == "REPRODUCED", outcome
    # torch's own kernels round differently: run with them, the track does not reproduce.
    sampling = manifest.sampling.model_copy(update={"batch_mode": "sequential"})
    other = reproduce(manifest.model_copy(update={"sampling": sampling}), invariant.settings)
    assert other.status != "REPRODUCED"


def test_an_op_without_an_invariant_kernel_fails_the_job_with_the_reason(
    invariant: Model, tiny_settings: GeneratorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(invariant_mode, "SAFE", invariant_mode.SAFE - {"sin"})
    with pytest.raises(GenerationFailedError, match=r"no kernel for aten\.sin"):
        invariant.generate([JOBS[0]])
    # Loading a model in this mode runs it once, so such a model is refused at the start.
    settings = tiny_settings.with_overrides(generator_batch_mode="invariant")
    with pytest.raises(ModelUnavailable, match=r"invariant batch mode: .*aten\.sin"):
        load_pipeline(settings)
