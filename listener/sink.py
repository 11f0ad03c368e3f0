"""Kafka side of the listener: the transactional sink and the checkpoint it resumes from.

Writes ``PREFIX.requests.v1`` (GenerationRequest, GenerationRevoked), ``PREFIX.failures.v1``
(GenerationFailed) and ``PREFIX.listener.checkpoints``; reads the latter at start-up.

The records of a poll and the new checkpoint go in one transaction. The transactional id is
derived from chain id + contract, so a second copy of the listener fences the first, and a
copy that died mid-transaction has its transaction aborted when the next one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from acesteps.kafka.producer import send_record, transactional_producer
from acesteps.kafka.records import OutRecord
from acesteps.messages import (
    GenerationFailed,
    GenerationRequest,
    GenerationRevoked,
    ListenerCheckpoint,
    Message,
    decode,
)
from acesteps.topics import Topics

__all__ = ["KafkaSink", "checkpoint_key", "load_checkpoint", "transactional_id"]


def checkpoint_key(chain_id: int, contract: str) -> str:
    return f"{chain_id}:{contract.lower()}"


def transactional_id(topic_prefix: str, chain_id: int, contract: str) -> str:
    """One per (topics, chain, contract): a second copy of the same listener is fenced."""
    return f"{topic_prefix}.listener.{chain_id}.{contract.lower()}"


class KafkaSink:
    """`listener.poller.Sink` on a transactional aiokafka producer that it owns.

    aiokafka commits a transaction even when one of its batches failed, and a refused batch
    leaves the producer's sequence numbers with a gap that fails every later transaction.
    So every delivery is awaited before the commit, and after any failure the transaction
    is aborted and the producer replaced (same transactional id) before the error is raised;
    the poller then retries the same range.
    """

    def __init__(self, bootstrap: str, txn_id: str, topics: Topics, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._txn_id = txn_id
        self._topics = topics
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer: fences an older copy and aborts the transaction it left."""
        producer = transactional_producer(self._bootstrap, self._txn_id, client_id=self._client_id)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    def _topic(self, record: Message) -> str:
        if isinstance(record, GenerationRequest | GenerationRevoked):
            return self._topics.requests
        if isinstance(record, GenerationFailed):
            return self._topics.failures
        raise TypeError(f"the listener does not write {type(record).__name__}")

    async def commit(self, records: Sequence[Message], checkpoint: ListenerCheckpoint) -> None:
        producer = self._producer
        assert producer is not None, "KafkaSink.start() first"
        key = checkpoint_key(checkpoint.chain_id, checkpoint.contract)
        outputs = [
            OutRecord.message(self._topic(r), r.request_id, r)  # type: ignore[attr-defined]
            for r in records
        ]
        outputs.append(OutRecord.message(self._topics.checkpoints, key, checkpoint))
        try:
            await producer.begin_transaction()
            futures = [await send_record(producer, out) for out in outputs]
            await asyncio.gather(*futures)
            await producer.commit_transaction()
        except ProducerFenced:
            raise
        except KafkaError:
            with contextlib.suppress(KafkaError):
                await producer.abort_transaction()
            await self.stop()
            await self.start()
            raise


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
        await consumer.topics()  # loads the cluster metadata that partitions_for_topic reads
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
