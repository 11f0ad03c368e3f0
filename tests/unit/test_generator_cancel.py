"""The generator's handler with the tiny model: a request that must stop (canceled, past its
deadline) becomes a `GenerationCanceled`, before its model work or between two steps."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acesteps.cancels import CancelView
from acesteps.kafka.records import InRecord
from acesteps.messages import (
    TYPE_HEADER,
    AudioReady,
    CancelRequested,
    GenerationCanceled,
    GenerationRequest,
    decode,
    encode,
    headers_for,
)
from acesteps.topics import Topics
from generator.model import Model
from generator.pipeline import Pipeline
from generator.policy import ContentPolicy
from generator.served import ServedModels
from generator.stops import Stops
from generator.worker import Deps, handle, prefetch
from tests.unit.generator_fixtures import tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

TOPICS = Topics("t")


def request(n: int, **fields: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="0x" + f"{n:064x}",
        source="http",
        requester="alice",
        prompt="a calm piano piece",
        duration_s=5,
        **fields,
    )


def record(req: GenerationRequest, offset: int = 0) -> InRecord:
    headers = tuple(headers_for(req))
    return InRecord(TOPICS.requests, 0, offset, req.request_id.encode(), encode(req), headers)


class Harness:
    def __init__(self, model: Model, slow_steps: float = 0.0) -> None:
        self.view = CancelView("unused:9092", TOPICS.cancels)  # filled with `add`, not read
        self.stops = Stops(self.view)
        self.steps_seen = 0
        self.two_steps = threading.Event()
        self.slow_steps = slow_steps
        self.model = model
        self.pipeline = Pipeline(self, encode_threads=1, stopping=self.stops.why)
        self.deps = Deps(
            TOPICS,
            ServedModels.of(model),
            ContentPolicy.from_file(None, enabled=False),
            self.pipeline,
            stops=self.stops,
        )

    # The model, counting the steps the pipeline's hook sees.
    def plan(self, jobs: Any) -> Any:
        return self.model.plan(jobs)

    def generate(self, jobs: Any, on_step: Any = None) -> Any:
        def counted(done: int, total: int) -> None:
            self.steps_seen = done
            if done >= 2:
                self.two_steps.set()
            time.sleep(self.slow_steps)
            if on_step is not None:
                on_step(done, total)

        return self.model.generate(jobs, counted)

    def cancel(self, req: GenerationRequest) -> None:
        self.view.add(CancelRequested(request_id=req.request_id, reason="requested", by="alice"))


def only_canceled(outputs: Any) -> GenerationCanceled:
    (out,) = outputs
    assert out.topic == TOPICS.failures
    assert dict(out.headers)[TYPE_HEADER] == b"GenerationCanceled"
    return decode(GenerationCanceled, out.value)


async def test_a_request_canceled_before_it_is_read_is_never_generated(tiny_model: Model) -> None:
    h = Harness(tiny_model)
    req = request(1)
    h.cancel(req)
    await prefetch([record(req)], h.deps)
    async with asyncio.timeout(10):  # nothing runs the pipeline: only a refusal returns
        canceled = only_canceled(await handle(record(req), h.deps))
    assert canceled.reason == "requested" and canceled.stage == "generator"
    assert "before generating" in canceled.message and "alice" in canceled.message
    assert h.steps_seen == 0


async def test_a_request_past_its_deadline_is_not_generated(tiny_model: Model) -> None:
    h = Harness(tiny_model)
    req = request(2, deadline=datetime.now(UTC) - timedelta(seconds=1))
    async with asyncio.timeout(10):
        canceled = only_canceled(await handle(record(req), h.deps))
    assert canceled.reason == "deadline" and "deadline" in canceled.message


async def test_a_cancel_during_generation_interrupts_between_steps(tiny_model: Model) -> None:
    h = Harness(tiny_model, slow_steps=0.2)
    req = request(3)
    feeder = asyncio.create_task(h.pipeline.run())
    try:
        await prefetch([record(req)], h.deps)
        handled = asyncio.create_task(handle(record(req), h.deps))
        async with asyncio.timeout(30):
            assert await asyncio.to_thread(h.two_steps.wait, 30)
            h.cancel(req)
            canceled = only_canceled(await handled)
    finally:
        feeder.cancel()
    total = tiny_model.settings.generator_steps
    assert canceled.reason == "requested"
    assert f"of {total}" in canceled.message
    assert h.steps_seen < total  # stopped between steps, not at the end


async def test_a_request_that_goes_on_still_gets_its_audio(tiny_model: Model) -> None:
    h = Harness(tiny_model)
    req = request(4, deadline=datetime.now(UTC) + timedelta(hours=1))
    feeder = asyncio.create_task(h.pipeline.run())
    try:
        async with asyncio.timeout(60):
            outputs = await handle(record(req), h.deps)
    finally:
        feeder.cancel()
    ready = decode(AudioReady, outputs[-1].value)
    assert ready.deadline == req.deadline  # the publisher checks it too


@pytest.mark.parametrize("reason", ["requested", "chain"])
def test_why_stop_names_who_canceled(reason: str) -> None:
    view = CancelView("unused:9092", TOPICS.cancels)
    view.add(CancelRequested(request_id="0x" + "ab" * 32, reason=reason, by="0x" + "11" * 20))
    stop = Stops(view).why("0x" + "ab" * 32)
    assert stop is not None and stop.reason == reason
    assert Stops(view).why("0x" + "cd" * 32) is None
