"""Kafka side of the listener: the transactional sink and the checkpoint it resumes from.

Writes ``PREFIX.requests.v1`` (GenerationRequest, GenerationRevoked), ``PREFIX.failures.v1``
(GenerationFailed) and ``PREFIX.listener.checkpoints``; reads the latter at start-up.

The records of a poll and the new checkpoint go in one transaction. The transactional id is
derived from chain id + contract, so a second copy of the listener fences the first, and a
copy that died mid-transaction has its transaction aborted when the next one starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from acesteps.messages import (
    GenerationFailed,
    GenerationRequest,
    GenerationRevoked,
    ListenerCheckpoint,
    Message,
    decode,
    encode,
    headers_for,
)
from acesteps.topics import Topics

__all__ = ["KafkaSink", "checkpoint_key", "load_checkpoint", "transactional_id"]


def checkpoint_key(chain_id: int, contract: str) -> str:
    return f"{chain_id}:{contract.lower()}"


def transactional_id(chain_id: int, contract: str) -> str:
    return f"acesteps-listener-{chain_id}-{contract.lower()}"


class KafkaSink:
    """`listener.poller.Sink` on a started transactional aiokafka producer."""

    def __init__(self, producer: Any, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics

    def _topic(self, record: Message) -> str:
        if isinstance(record, GenerationRequest | GenerationRevoked):
            return self._topics.requests
        if isinstance(record, GenerationFailed):
            return self._topics.failures
        raise TypeError(f"the listener does not write {type(record).__name__}")

    async def commit(self, records: Sequence[Message], checkpoint: ListenerCheckpoint) -> None:
        async with self._producer.transaction():
            for record in records:
                await self._producer.send(
                    self._topic(record),
                    key=record.request_id.encode(),  # type: ignore[attr-defined]
                    value=encode(record),
                    headers=headers_for(record),
                )
            await self._producer.send(
                self._topics.checkpoints,
                key=checkpoint_key(checkpoint.chain_id, checkpoint.contract).encode(),
                value=encode(checkpoint),
                headers=headers_for(checkpoint),
            )


async def load_checkpoint(
    bootstrap: str, topics: Topics, chain_id: int, contract: str
) -> ListenerCheckpoint | None:
    """The last committed checkpoint of this chain + contract, if any.

    Reads the compacted topic from the start with read_committed, so an aborted
    transaction's checkpoint is never taken.
    """
    key = checkpoint_key(chain_id, contract).encode()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topics.checkpoints) or {0}
        tps = [TopicPartition(topics.checkpoints, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: bytes | None = None

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batches = await consumer.getmany(*tps, timeout_ms=1000)
            for messages in batches.values():
                for msg in messages:
                    if msg.key == key:
                        latest = msg.value
        return decode(ListenerCheckpoint, latest) if latest is not None else None
    finally:
        await consumer.stop()
