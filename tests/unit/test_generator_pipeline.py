"""The generator's pipeline with a fake model: batching, overlap, OOM splits, stale jobs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pytest

from generator import pipeline as pipeline_mod
from generator.errors import Interrupted, OutOfMemory
from generator.jobs import Job
from generator.pipeline import Pipeline


class FakeModel:
    """Returns a tone per job (its seed sets the pitch); can refuse big groups as OOM."""

    def __init__(
        self,
        group_size: int = 1,
        oom_above: int | None = None,
        delay_s: float = 0.0,
        steps: int = 8,
        step_s: float = 0.0,
    ):
        self.steps, self.step_s = steps, step_s
        self.group_size = group_size
        self.oom_above = oom_above
        self.delay_s = delay_s
        self.calls: list[tuple[int, float, float]] = []  # (size, start, end)
        self.lock = threading.Lock()

    def plan(self, jobs: Sequence[Job]) -> list[list[int]]:
        idx = list(range(len(jobs)))
        return [idx[i : i + self.group_size] for i in range(0, len(idx), self.group_size)]

    def generate(
        self, jobs: Sequence[Job], on_step: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        start = time.monotonic()
        for step in range(1, self.steps + 1) if on_step else ():
            time.sleep(self.step_s)
            on_step(step, self.steps)
        if self.oom_above is not None and len(jobs) > self.oom_above:
            with self.lock:
                self.calls.append((len(jobs), start, time.monotonic()))
            raise OutOfMemory(f"{len(jobs)} jobs do not fit")
        time.sleep(self.delay_s)
        out = []
        for job in jobs:
            t = np.arange(round(job.duration_s * 48_000)) / 48_000
            tone = (0.3 * np.sin(2 * np.pi * (200 + job.seed) * t)).astype(np.float32)
            out.append(np.stack([tone, tone]))
        with self.lock:
            self.calls.append((len(jobs), start, time.monotonic()))
        return out


def job(seed: int) -> Job:
    return Job(caption=f"tone {seed}", lyrics="[Instrumental]", duration_s=5.0, seed=seed)


async def run_with(model: FakeModel, work):  # type: ignore[no-untyped-def]
    pipe = Pipeline(model, encode_threads=2)
    feeder = asyncio.create_task(pipe.run())
    try:
        return await work(pipe)
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


async def test_results_match_a_single_run_whatever_the_batch() -> None:
    async def alone(pipe: Pipeline):  # type: ignore[no-untyped-def]
        return await pipe.result("a", job(7), "wav")

    async def batched(pipe: Pipeline):  # type: ignore[no-untyped-def]
        pipe.schedule([(f"k{i}", job(i), "wav") for i in (3, 7, 9)])
        return await pipe.result("k7", job(7), "wav")

    single = await run_with(FakeModel(group_size=1), alone)
    in_batch = await run_with(FakeModel(group_size=3), batched)
    assert single.audio_hash == in_batch.audio_hash
    assert single.data == in_batch.data
    assert in_batch.batch_size == 3 and "batch_size" not in in_batch.timings  # seconds only


async def test_out_of_memory_splits_the_group_until_it_fits() -> None:
    model = FakeModel(group_size=4, oom_above=1)

    async def work(pipe: Pipeline):  # type: ignore[no-untyped-def]
        pipe.schedule([(f"k{i}", job(i), "wav") for i in range(4)])
        return [await pipe.result(f"k{i}", job(i), "wav") for i in range(4)]

    results = await run_with(model, work)
    assert len({r.audio_hash for r in results}) == 4
    assert [size for size, _, _ in model.calls] == [4, 2, 1, 1, 2, 1, 1]


async def test_a_job_that_never_fits_fails_with_out_of_memory() -> None:
    async def work(pipe: Pipeline):  # type: ignore[no-untyped-def]
        return await pipe.result("k", job(1), "wav")

    with pytest.raises(OutOfMemory):
        await run_with(FakeModel(oom_above=0), work)


async def test_encoding_overlaps_the_next_model_call(monkeypatch: pytest.MonkeyPatch) -> None:
    encodes: list[tuple[float, float]] = []
    real = pipeline_mod._encode

    def slow_encode(raw, item):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        time.sleep(0.3)
        out = real(raw, item)
        encodes.append((start, time.monotonic()))
        return out

    monkeypatch.setattr(pipeline_mod, "_encode", slow_encode)
    model = FakeModel(group_size=1, delay_s=0.3)

    async def work(pipe: Pipeline):  # type: ignore[no-untyped-def]
        pipe.schedule([(f"k{i}", job(i), "wav") for i in range(3)])
        return [await pipe.result(f"k{i}", job(i), "wav") for i in range(3)]

    await run_with(model, work)
    first_encode_end = min(end for _, end in encodes)
    second_model_start = sorted(start for _, start, _ in model.calls)[1]
    assert second_model_start < first_encode_end, "the model waited for the encoder"


async def test_a_new_batch_drops_jobs_nobody_will_await() -> None:
    model = FakeModel(group_size=1, delay_s=0.2)

    async def work(pipe: Pipeline):  # type: ignore[no-untyped-def]
        pipe.schedule([("old1", job(1), "wav"), ("old2", job(2), "wav")])
        pipe.schedule([("new", job(3), "wav")])
        await pipe.result("new", job(3), "wav")
        return pipe

    pipe = await run_with(model, work)
    assert pipe._pending == {}
    assert len(model.calls) <= 2  # old2 was cancelled before the model reached it


async def test_model_calls_are_measured() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_batches = sample("acesteps_generator_batch_size_count")
    before_model = sample("acesteps_generator_stage_seconds_count", stage="model")
    before_encode = sample("acesteps_generator_stage_seconds_count", stage="encode")

    async def work(pipe: Pipeline):  # type: ignore[no-untyped-def]
        pipe.schedule([(f"k{i}", job(i), "wav") for i in range(3)])
        return [await pipe.result(f"k{i}", job(i), "wav") for i in range(3)]

    await run_with(FakeModel(group_size=3, delay_s=0.05), work)
    assert sample("acesteps_generator_batch_size_count") == before_batches + 1
    assert sample("acesteps_generator_stage_seconds_count", stage="model") == before_model + 3
    assert sample("acesteps_generator_stage_seconds_count", stage="encode") == before_encode + 3
    assert sample("acesteps_generator_realtime_factor") > 0


class Steps:
    """A `Progress` that records the step announcements."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, ...], int, int, float | None]] = []

    async def report(self, request_ids: Iterable[str], stage: str) -> None:
        return None

    async def steps(
        self, request_ids: Iterable[str], step: int, steps: int, eta_s: float | None
    ) -> None:
        self.seen.append((tuple(request_ids), step, steps, eta_s))


async def test_denoising_steps_are_announced_for_the_groups_requests() -> None:
    model = FakeModel(group_size=2, steps=12, step_s=0.1)
    steps = Steps()
    pipe = Pipeline(model, encode_threads=2, progress=steps)
    feeder = asyncio.create_task(pipe.run())
    try:
        pipe.schedule(
            [(f"k{i}", job(i), "wav") for i in range(3)],
            request_ids={"k0": "0xa", "k1": "0xb", "k2": "0xc"},
        )
        for i in range(3):
            await pipe.result(f"k{i}", job(i), "wav")
        await asyncio.sleep(0.05)  # the last announcement's task
    finally:
        feeder.cancel()
    first = [s for s in steps.seen if s[0] == ("0xa", "0xb")]
    second = [s for s in steps.seen if s[0] == ("0xc",)]
    assert first and second and len(steps.seen) == len(first) + len(second)
    for seen in (first, second):
        done = [step for _, step, _, _ in seen]
        assert done == sorted(done) and done[-1] == 12 and {t for _, _, t, _ in seen} == {12}
        assert len(seen) <= 5  # 1.2 s of steps, at most one every 0.5 s, plus the last
        assert seen[-1][3] == 0.0  # nothing left at the last step
        assert all(eta is not None and 0 <= eta < 2 for _, _, _, eta in seen)


async def test_no_announcements_without_request_ids() -> None:
    model = FakeModel(steps=4)
    steps = Steps()
    pipe = Pipeline(model, encode_threads=1, progress=steps)
    feeder = asyncio.create_task(pipe.run())
    try:
        await pipe.result("k", job(1), "wav")  # scheduled alone, without its request id
    finally:
        feeder.cancel()
    assert steps.seen == []


async def test_a_group_whose_requests_all_stop_is_interrupted_between_steps() -> None:
    model = FakeModel(group_size=2, steps=50, step_s=0.02)
    stopped: set[str] = set()
    pipe = Pipeline(model, encode_threads=2, stopping=lambda rid: "x" if rid in stopped else None)
    feeder = asyncio.create_task(pipe.run())
    try:
        pipe.schedule(
            [(f"k{i}", job(i), "wav") for i in range(2)], request_ids={"k0": "0xa", "k1": "0xb"}
        )
        await asyncio.sleep(0.15)  # a few steps in
        stopped.update({"0xa", "0xb"})
        for key in ("k0", "k1"):
            with pytest.raises(Interrupted, match=r"after denoising step \d+ of 50"):
                await pipe.result(key, job(int(key[1])), "wav")
    finally:
        feeder.cancel()
    assert model.calls == []  # the model never returned: it stopped well before its 1 s


async def test_a_group_where_only_some_stop_runs_to_the_end_unchanged() -> None:
    async def plain(pipe: Pipeline):  # type: ignore[no-untyped-def]
        return await pipe.result("k1", job(1), "wav")

    alone = await run_with(FakeModel(steps=5), plain)
    model = FakeModel(group_size=2, steps=5, step_s=0.01)
    pipe = Pipeline(model, encode_threads=2, stopping=lambda rid: "x" if rid == "0xa" else None)
    feeder = asyncio.create_task(pipe.run())
    try:
        pipe.schedule(
            [(f"k{i}", job(i), "wav") for i in range(2)], request_ids={"k0": "0xa", "k1": "0xb"}
        )
        got = await pipe.result("k1", job(1), "wav")
        await pipe.result("k0", job(0), "wav")  # made too: its handler drops it
    finally:
        feeder.cancel()
    assert [size for size, _, _ in model.calls] == [2]
    assert got.audio_hash == alone.audio_hash
