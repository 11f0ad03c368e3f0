"""`acesteps.kafka.pipelined.PipelinedLoop` against the real broker, with a handler in process.

The handler stands for the publisher: ``prepare`` turns a record into an item (or outputs at
once), ``submit`` starts a batch (a registration transaction) and its finish waits on a gate
the test opens (the confirmations). Checked: every output exactly once and nothing else,
batches of at most ``batch_size`` items, several batches in flight before the first
finishes, commits in order, per-item dead letters and retries, a poison item that fails
its whole batch isolated without taking the others with it, a loop cancelled with
batches in the air committing none of them, its successor committing each once, and
records prepared ``concurrency`` at a time, the next batch filling up (no fuller than
``batch_size``) while every slot is in the air.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from acesteps.errors import PermanentError, RetryableError
from acesteps.kafka.pipelined import Finish, PipelinedLoop, Pipelining
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import GenerationFailed, GenerationRequest, decode, encode
from acesteps.settings import CommonSettings
from tests.integration.kafkaread import eventually, read_all
from tests.integration.test_kafka_transactions import (
    consumed_all,
    loop_config,
    make_topics,
    produce_plain,
    request,
)


class Refused(PermanentError):
    code = "refused"


@dataclass
class Handler:
    """Items are the requests' prompts; ``prompt`` words decide what happens to them."""

    out: str
    open: asyncio.Event = field(default_factory=asyncio.Event)
    submits: list[list[str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    finished: list[int] = field(default_factory=list)  # submit numbers, in finishing order
    attempts: Counter[str] = field(default_factory=Counter)
    prepare_s: float = 0.0
    preparing: int = 0
    most_preparing: int = 0

    def __post_init__(self) -> None:
        self.open.set()

    async def prepare(self, record: InRecord, deps: None) -> str | Sequence[OutRecord]:
        self.preparing += 1
        self.most_preparing = max(self.most_preparing, self.preparing)
        try:
            await asyncio.sleep(self.prepare_s)
        finally:
            self.preparing -= 1
        req = decode_value(GenerationRequest, record)
        if req.prompt.startswith("skip"):
            return [OutRecord(self.out, record.key, b"skipped")]
        return req.prompt

    async def submit(self, items: Sequence[str], deps: None) -> Finish:
        number = len(self.submits)
        self.submits.append(list(items))
        if any(i.startswith("poison") for i in items):
            raise ValueError("a batch with a poison item cannot even be sent")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

        async def finish() -> list[Sequence[OutRecord] | Exception]:
            try:
                await self.open.wait()
            finally:
                self.in_flight -= 1
            self.finished.append(number)
            outcomes: list[Sequence[OutRecord] | Exception] = []
            for item in items:
                self.attempts[item] += 1
                if item.startswith("refuse"):
                    outcomes.append(Refused("no"))
                elif item.startswith("flaky") and self.attempts[item] < 3:
                    outcomes.append(RetryableError("not yet"))
                else:
                    outcomes.append([OutRecord(self.out, item.encode(), item.encode())])
            return outcomes

        return finish


def pipelined(
    settings: CommonSettings,
    handler: Handler,
    batch_size: int = 5,
    pipelining: Pipelining | None = None,
    **config: Any,
) -> PipelinedLoop[None, str]:
    pipelining = pipelining or Pipelining(batch_size=batch_size, fill_wait_s=0.1, max_in_flight=3)
    return PipelinedLoop(loop_config(settings, **config), handler, None, pipelining)


async def produce(settings: CommonSettings, prompts: Sequence[str]) -> list[GenerationRequest]:
    requests = [
        request(i).model_copy(update={"prompt": prompt}) for i, prompt in enumerate(prompts)
    ]
    await produce_plain(
        settings.kafka_bootstrap,
        f"{settings.topic_prefix}.in",
        [(r.request_id.encode(), encode(r)) for r in requests],
    )
    return requests


async def consumed(
    settings: CommonSettings, loop: PipelinedLoop[None, str], task: asyncio.Task[None]
) -> bool:
    if task.done():
        task.result()
        raise AssertionError("the loop stopped by itself")
    return await consumed_all(settings.kafka_bootstrap, loop.config.group_id, loop.config.topics[0])


async def until_consumed(
    settings: CommonSettings,
    loop: PipelinedLoop[None, str],
    task: asyncio.Task[None],
    stop: asyncio.Event,
) -> None:
    """Wait until ``loop`` (running as ``task``) has committed every input, then stop it."""
    try:
        await eventually(lambda: consumed(settings, loop, task), 60, "every input committed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def run_until_consumed(settings: CommonSettings, loop: PipelinedLoop[None, str]) -> None:
    stop = asyncio.Event()
    await until_consumed(settings, loop, asyncio.create_task(loop.run(stop)), stop)


async def outputs(settings: CommonSettings) -> Counter[str]:
    records = await read_all(settings.kafka_bootstrap, f"{settings.topic_prefix}.out")
    return Counter(r.value.decode() for r in records)


async def failures(settings: CommonSettings) -> dict[str, GenerationFailed]:
    records = await read_all(settings.kafka_bootstrap, f"{settings.topic_prefix}.failures.v1")
    return {r.key.decode(): decode(GenerationFailed, r.value) for r in records}


async def test_batches_fly_together_and_commit_each_output_once(settings: CommonSettings) -> None:
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    prompts = [f"track {i}" for i in range(23)] + ["skip me"]
    await produce(settings, prompts)
    handler = Handler(f"{settings.topic_prefix}.out")
    handler.open.clear()  # nothing finishes until several batches are in the air
    loop = pipelined(settings, handler)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    async def three_in_flight() -> bool:
        return handler.in_flight == 3

    await eventually(three_in_flight, 30, "three batches in flight")
    assert await outputs(settings) == Counter(), "nothing commits before its batch finished"
    handler.open.set()
    await until_consumed(settings, loop, task, stop)

    assert await outputs(settings) == Counter([*prompts[:-1], "skipped"])
    assert all(1 <= len(batch) <= 5 for batch in handler.submits)
    assert sorted(i for batch in handler.submits for i in batch) == sorted(prompts[:-1])
    assert handler.most_in_flight == 3
    assert await failures(settings) == {}


async def test_item_errors_dead_letter_or_retry_alone(settings: CommonSettings) -> None:
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    prompts = ["fine 1", "refuse me", "flaky one", "fine 2", "fine 3"]
    requests = await produce(settings, prompts)
    handler = Handler(f"{settings.topic_prefix}.out")
    await run_until_consumed(settings, pipelined(settings, handler, batch_size=10))

    assert await outputs(settings) == Counter(["fine 1", "flaky one", "fine 2", "fine 3"])
    assert handler.attempts["flaky one"] == 3
    (refused,) = (await failures(settings)).values()
    assert refused.request_id == requests[1].request_id and refused.code == "refused"


async def test_a_poison_item_is_isolated_and_the_rest_go_through(settings: CommonSettings) -> None:
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    prompts = [f"track {i}" for i in range(6)] + ["poison pill"] + [f"late {i}" for i in range(3)]
    requests = await produce(settings, prompts)
    handler = Handler(f"{settings.topic_prefix}.out")
    await run_until_consumed(settings, pipelined(settings, handler, batch_size=10))

    good = [p for p in prompts if not p.startswith("poison")]
    assert await outputs(settings) == Counter(good)
    (dead,) = (await failures(settings)).values()
    assert dead.request_id == requests[6].request_id and dead.code == "invalid_record"
    poisoned = [batch for batch in handler.submits if "poison pill" in batch]
    assert len(poisoned[0]) > 1 and poisoned[-1] == ["poison pill"], "alone when dead-lettered"
    assert all(len(b) == 1 for b in handler.submits[handler.submits.index(poisoned[0]) + 1 :][:1])


async def test_cancelled_with_batches_in_the_air_commits_none_and_the_next_loop_all(
    settings: CommonSettings,
) -> None:
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    prompts = [f"track {i}" for i in range(12)]
    await produce(settings, prompts)
    first = Handler(f"{settings.topic_prefix}.out")
    first.open.clear()
    task = asyncio.create_task(pipelined(settings, first).run(asyncio.Event()))

    async def in_flight() -> bool:
        return first.in_flight >= 2

    await eventually(in_flight, 30, "batches in flight")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await outputs(settings) == Counter()

    second = Handler(f"{settings.topic_prefix}.out")
    await run_until_consumed(settings, pipelined(settings, second))
    assert await outputs(settings) == Counter(prompts)


async def test_records_are_prepared_side_by_side_and_a_full_pipeline_fills_its_next_batch(
    settings: CommonSettings,
) -> None:
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    prompts = [f"track {i}" for i in range(30)]
    await produce(settings, prompts)
    handler = Handler(f"{settings.topic_prefix}.out", prepare_s=0.1)
    handler.open.clear()
    # Two at a time, 0.1 s each: ten items take 0.5 s, five times the fill's wait.
    pipelining = Pipelining(batch_size=10, fill_wait_s=0.1, max_in_flight=1, concurrency=2)
    loop = pipelined(settings, handler, pipelining=pipelining)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    async def next_batch_prepared() -> bool:
        return handler.in_flight == 1 and handler.most_preparing > 0 and handler.preparing == 0

    await eventually(next_batch_prepared, 30, "the first batch in flight, the next one full")
    await asyncio.sleep(0.5)  # it stays full: not one record more is prepared, none is sent
    assert len(handler.submits) == 1
    handler.open.set()
    await until_consumed(settings, loop, task, stop)

    assert await outputs(settings) == Counter(prompts)
    assert handler.most_preparing == 2
    assert len(handler.submits[0]) < 10, "the first batch leaves when its wait is over"
    assert len(handler.submits[1]) == 10, "the next filled up while the first was in the air"
    assert all(len(batch) <= 10 for batch in handler.submits)
