"""Several served models in one generator (`generator.served`), on CPU with two tiny checkpoints.

``tiny-a`` is the tiny checkpoint (8 steps, the default), ``tiny-b`` a second one with other
random weights (another seed) and 4 steps. Checked: a job runs on the model it names, with the
bytes of that model's single run; jobs of two models never share a pipeline call; an unknown
name is a ``unknown_model`` failure record, never a crash; the record and the manifest name
the model and its weights digest; models are evicted least recently used first when the
memory budget is short, and an evicted model still describes its requests and comes back with
the same bytes; a model being downloaded does not hold up the others; a pinned digest that
does not match refuses the model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from acesteps.kafka.records import InRecord
from acesteps.messages import (
    AudioReady,
    GenerationFailed,
    GenerationRequest,
    decode,
    encode,
    headers_for,
)
from acesteps.models import Catalog, ModelSpec, ServedModel
from acesteps.topics import Topics
from generator.digest import weights_digest
from generator.jobs import Job
from generator.model import Model, estimate_bytes, load_pipeline
from generator.pipeline import Pipeline, pcm_keccak256
from generator.policy import ContentPolicy
from generator.served import ModelLoadFailed, ServedModels, UnknownModelError
from generator.settings import GeneratorSettings
from generator.worker import Deps, handle, prefetch
from tests.unit.generator_fixtures import tiny_b_dir, tiny_dir, tiny_settings, two_models

__all__ = ["tiny_b_dir", "tiny_dir", "tiny_settings", "two_models"]

TOPICS = Topics("t")


def job(model: str, seed: int = 5, caption: str = "warm lo-fi piano") -> Job:
    return Job(caption=caption, lyrics="[verse]\nla la", duration_s=2.0, seed=seed, model=model)


def request(n: int, **fields: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="0x" + f"{n:064x}",
        source="http",
        requester="alice",
        prompt="a calm piano piece",
        duration_s=5,
        seed=3,
        **fields,
    )


def record(req: GenerationRequest, offset: int = 0) -> InRecord:
    headers = tuple(headers_for(req))
    return InRecord(TOPICS.requests, 0, offset, req.request_id.encode(), encode(req), headers)


@pytest.fixture(scope="module")
def served(two_models: GeneratorSettings) -> ServedModels:
    return ServedModels.from_settings(two_models)


@pytest.fixture
async def deps(served: ServedModels) -> AsyncIterator[Deps]:
    pipeline = Pipeline(served, encode_threads=1)
    feeder = asyncio.create_task(pipeline.run())
    try:
        yield Deps(TOPICS, served, ContentPolicy.from_file(None, enabled=False), pipeline)
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


# ------------------------------------------------------------------ routing


def test_the_settings_list_both_models_and_the_first_is_the_default(
    two_models: GeneratorSettings,
) -> None:
    catalog = two_models.served()
    assert catalog.names == ("tiny-a", "tiny-b") and catalog.default == "tiny-a"
    assert catalog.resolve(None).name == "tiny-a"


def test_a_job_runs_on_the_model_it_names_with_that_models_single_run_bytes(
    served: ServedModels, two_models: GeneratorSettings
) -> None:
    a, b = job("tiny-a"), job("tiny-b")
    (on_a,) = served.generate([a])
    steps: list[tuple[int, int]] = []
    (on_b,) = served.generate([b], on_step=lambda done, total: steps.append((done, total)))
    alone = load_pipeline(two_models, two_models.served().resolve("tiny-b"))
    (b_alone,) = alone.generate([b])
    assert pcm_keccak256(on_b) == pcm_keccak256(b_alone)  # B's pipeline, B's bytes
    assert not np.array_equal(on_a, on_b)  # other weights, other steps: other audio
    assert steps[-1] == (4, 4)  # tiny-b samples with its own 4 steps
    assert served.model("tiny-b").checkpoint.path == alone.checkpoint.path


async def test_the_pipeline_routes_each_job_to_its_model(served: ServedModels, deps: Deps) -> None:
    jobs = {"a": job("tiny-a", seed=9), "b": job("tiny-b", seed=9)}
    deps.pipeline.schedule([(key, j, "wav") for key, j in jobs.items()])
    got = {key: await deps.pipeline.result(key, j, "wav") for key, j in jobs.items()}
    for key, j in jobs.items():
        (alone,) = served.model(j.model).generate([j])
        assert got[key].pcm_keccak256 == pcm_keccak256(alone), key


def test_jobs_of_two_models_never_share_a_pipeline_call(two_models: GeneratorSettings) -> None:
    batched = two_models.with_overrides(generator_batch_mode="batched", generator_max_batch=8)
    models = ServedModels.from_settings(batched)
    for name in ("tiny-a", "tiny-b"):
        models.model(name)
    # Equal in everything but the model: one batch key per model, never one for both.
    jobs = [job("tiny-a", 1), job("tiny-b", 2), job("tiny-a", 3), job("tiny-b", 4)]
    groups = models.plan(jobs)
    assert sorted(groups) == [[0, 2], [1, 3]]
    a = models.model("tiny-a")
    assert a.batch_key(jobs[0]) != a.batch_key(jobs[1])  # a Model alone keeps them apart too
    assert sorted(a.plan(jobs)) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="one model"):
        models.generate([jobs[0], jobs[1]])


# ------------------------------------------------------------------ the worker


async def test_records_and_manifests_name_the_model_and_its_digest(
    deps: Deps, tiny_dir: Path, tiny_b_dir: Path
) -> None:
    for n, (asked, served_as, directory) in enumerate(
        [(None, "tiny-a", tiny_dir), ("tiny-b", "tiny-b", tiny_b_dir)]
    ):
        req = request(n + 1, model=asked)
        await prefetch([record(req)], deps)
        outputs = await handle(record(req), deps)
        ready = decode(AudioReady, outputs[-1].value)
        assert ready.model == served_as
        assert ready.manifest is not None
        assert ready.manifest.model.name == served_as
        assert ready.manifest.model.weights_digest == weights_digest(directory)
        assert ready.manifest.request.options.model == asked  # as its author wrote it
        assert ready.manifest.sampling.steps == (8 if served_as == "tiny-a" else 4)


async def test_an_unknown_model_is_a_failure_record_not_a_crash(deps: Deps) -> None:
    req = request(7, model="no-such-model")
    await prefetch([record(req)], deps)  # skips it: the handler says why
    (out,) = await handle(record(req), deps)
    assert out.topic == TOPICS.failures
    failed = decode(GenerationFailed, out.value)
    assert failed.code == "unknown_model" and failed.stage == "generator"
    assert "no-such-model" in failed.message and "tiny-a, tiny-b" in failed.message
    with pytest.raises(UnknownModelError):
        deps.models.resolve("no-such-model")


async def test_a_model_that_cannot_load_fails_its_requests_with_model_unavailable(
    tiny_settings: GeneratorSettings, tmp_path: Path
) -> None:
    settings = tiny_settings.with_overrides(
        models={"tiny": "tiny", "gone": {"source": str(tmp_path / "nothing-here")}}
    )
    models = ServedModels.from_settings(settings)
    deps = Deps(TOPICS, models, ContentPolicy.from_file(None, enabled=False), Pipeline(models, 1))
    (out,) = await handle(record(request(8, model="gone")), deps)
    failed = decode(GenerationFailed, out.value)
    assert failed.code == "model_unavailable" and "nothing-here" in failed.message


def test_a_pinned_digest_that_does_not_match_refuses_the_model(
    tiny_settings: GeneratorSettings, tiny_dir: Path
) -> None:
    wrong = "sha256:" + "0" * 64
    settings = tiny_settings.with_overrides(models={"tiny": {"source": "tiny", "digest": wrong}})
    with pytest.raises(ModelLoadFailed, match="pins"):
        ServedModels.from_settings(settings).loaded("tiny")
    right = weights_digest(tiny_dir)
    settings = tiny_settings.with_overrides(models={"tiny": {"source": "tiny", "digest": right}})
    assert ServedModels.from_settings(settings).loaded("tiny").checkpoint.weights_digest == right


# ------------------------------------------------------------------ memory budget


class FakeModel:
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.released = name, size, False
        self.spec = ModelSpec(source="tiny")

    def memory_bytes(self) -> int:
        return 0 if self.released else self.size

    def release(self) -> None:
        self.released = True

    def plan(self, jobs: Sequence[Job]) -> list[list[int]]:
        return [[i] for i in range(len(jobs))]

    def generate(self, jobs: Sequence[Job], on_step: Any = None) -> list[str]:
        assert not self.released
        return [self.name for _ in jobs]


def fake_models(budget: int | None, sizes: dict[str, int]) -> tuple[ServedModels, list[str]]:
    loads: list[str] = []

    def load(served: ServedModel) -> Any:
        loads.append(served.name)
        return FakeModel(served.name, sizes[served.name])

    catalog = Catalog({n: ServedModel(n, ModelSpec(source="tiny")) for n in sizes}, "a")
    models = ServedModels(
        catalog, load, budget_bytes=budget, estimate=lambda served: sizes[served.name]
    )
    return models, loads


def test_the_least_recently_used_model_is_evicted_first() -> None:
    models, loads = fake_models(250, {"a": 100, "b": 100, "c": 100})
    models.loaded("a")
    models.loaded("b")
    models.generate([job("a")])  # a is now the most recently used
    models.loaded("c")  # 300 > 250: b goes
    assert models.evictions == ["b"] and models.loaded_names() == ["a", "c"]
    assert models.generate([job("b")]) == ["b"]  # b comes back; a is the oldest now
    assert models.evictions == ["b", "a"] and models.loaded_names() == ["c", "b"]
    assert loads == ["a", "b", "c", "b"]
    assert models.used_bytes() <= 250


def test_without_a_budget_nothing_is_evicted_and_a_too_large_model_loads_alone() -> None:
    models, _ = fake_models(None, {"a": 100, "b": 100, "c": 100})
    for name in "abc":
        models.loaded(name)
    assert models.evictions == [] and models.loaded_names() == ["a", "b", "c"]
    models, _ = fake_models(150, {"a": 100, "b": 400, "c": 100})
    models.loaded("a")
    models.loaded("b")  # larger than the budget alone: everything else goes first
    assert models.evictions == ["a"] and models.loaded_names() == ["b"]


def test_a_model_being_downloaded_does_not_hold_up_the_others() -> None:
    sizes = {"a": 100, "b": 100}
    release = threading.Event()
    catalog = Catalog({n: ServedModel(n, ModelSpec(source="tiny")) for n in sizes}, "a")
    models = ServedModels(
        catalog,
        lambda served: FakeModel(served.name, sizes[served.name]),  # type: ignore[arg-type,return-value]
        fetch=lambda served: release.wait(10) if served.name == "b" else None,
    )
    models.loaded("a")
    downloading = threading.Thread(target=models.loaded, args=("b",))
    downloading.start()
    try:
        assert models.generate([job("a")]) == ["a"]  # while b's files are still coming
        assert models.loaded_names() == ["a"]
    finally:
        release.set()
        downloading.join(10)
    assert models.loaded_names() == ["a", "b"]


def test_an_evicted_tiny_model_still_describes_and_comes_back_with_the_same_bytes(
    two_models: GeneratorSettings, tiny_dir: Path
) -> None:
    one = estimate_bytes(tiny_dir, torch.float32)
    budget = one * 3 // 2  # room for one tiny model, not two
    models = ServedModels.from_settings(two_models.with_overrides(generator_memory_budget=budget))
    a = models.loaded("tiny-a")
    # The safetensors headers' estimate misses only buffers that are not saved (rotary tables).
    assert one <= a.memory_bytes() < one * 1.01
    (first,) = models.generate([job("tiny-a")])
    models.loaded("tiny-b")
    assert models.evictions == ["tiny-a"] and a.released
    assert models.used_bytes() <= budget
    shell = models.model("tiny-a")  # the evicted one: tokenizes, describes, does not run
    assert shell is a and shell.token_lengths(job("tiny-a"))[0] > 0
    (again,) = models.generate([job("tiny-a")])  # reloaded (tiny-b evicted)
    assert models.evictions == ["tiny-a", "tiny-b"]
    assert pcm_keccak256(again) == pcm_keccak256(first)


def test_a_single_model_deployment_is_one_model_named_default(
    tiny_settings: GeneratorSettings,
) -> None:
    models = ServedModels.from_settings(tiny_settings)
    assert models.catalog.names == ("default",) and models.resolve(None) == "default"
    model: Model = models.loaded("default")
    assert model.name == "default" and model.steps == tiny_settings.generator_steps
