"""`TransactionalProducer.commit` asks whether the batch is still ours right before the
commit: a process frozen while it sent a large batch aborts instead of committing on waking
(`acesteps.kafka.transactions`). Unit tests with a fake aiokafka producer; the real broker's
side is in tests/integration/test_kafka_transactions.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from acesteps.kafka.records import OutRecord
from acesteps.kafka.transactions import NotOurs, TransactionalProducer


class FakeProducer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append("offsets")

    async def send(self, topic: str, **_: Any) -> asyncio.Future[None]:
        self.calls.append(f"send {topic}")
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    async def commit_transaction(self) -> None:
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")


async def _committed(still_ours: Any) -> list[str]:
    calls: list[str] = []
    txn = TransactionalProducer(lambda: FakeProducer(calls))  # type: ignore[arg-type,return-value]
    await txn.start()
    records = [OutRecord("out", b"k", b"v")]
    offsets = {TopicPartition("in", 0): 7}
    asked: list[list[str]] = []

    def check() -> str | None:
        asked.append(list(calls))  # what had happened when it was asked
        return still_ours()

    try:
        await txn.commit(records, offsets, "group", still_ours=check)
    finally:
        await txn.close()
    assert asked == [["start", "begin", "offsets", "send out"]]  # after sending, before commit
    return calls


async def test_a_batch_still_ours_is_committed() -> None:
    calls = await _committed(lambda: None)
    assert calls[calls.index("send out") + 1] == "commit" and "abort" not in calls


async def test_a_batch_that_may_be_another_members_is_aborted_not_committed() -> None:
    with pytest.raises(NotOurs, match="stood still"):
        await _committed(lambda: "the process stood still for 12.0 s")


async def test_aborted_then_a_fresh_producer_and_never_a_commit() -> None:
    calls: list[str] = []
    txn = TransactionalProducer(lambda: FakeProducer(calls))  # type: ignore[arg-type,return-value]
    await txn.start()
    with pytest.raises(NotOurs):
        await txn.commit([OutRecord("out", b"k", b"v")], still_ours=lambda: "moved")
    await txn.close()
    assert "commit" not in calls
    assert calls[calls.index("send out") + 1 :] == ["abort", "stop", "start", "stop"]
