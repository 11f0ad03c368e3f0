"""Reading what is on a topic, for assertions: every record up to the end, and polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from acesteps.kafka import connection
from acesteps.kafka.admin import topic_partitions

__all__ = ["eventually", "partitions", "read_all"]


async def partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    return await topic_partitions(bootstrap, [topic])


async def read_all(
    bootstrap: str, topic: str, isolation: str = "read_committed", timeout_s: float = 20
) -> list[Any]:
    """Every record of ``topic`` up to its current end (the LSO for read_committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation,
        enable_auto_commit=False,
        **connection.options(),  # the cluster tests' SASL_SSL; nothing on the local broker
    )
    await consumer.start()
    try:
        tps = await partitions(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        async with asyncio.timeout(timeout_s):
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                for records in (await consumer.getmany(*tps, timeout_ms=200)).values():
                    out.extend(records)
        return out
    finally:
        await consumer.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float = 30,
    what: str = "condition",
    interval_s: float = 0.1,
) -> None:
    """Poll ``check`` until it holds (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
