"""Kafka side of the listener: the transactional sink and the checkpoint it resumes from.

Writes ``PREFIX.requests.v1`` (GenerationRequest, GenerationRevoked), ``PREFIX.failures.v1``
(GenerationFailed) and ``PREFIX.listener.checkpoints``; reads the latter at start-up.

The records of a poll and the new checkpoint go in one transaction. The transactional id is
derived from chain id + contract, so a second copy of the listener fences the first, and a
copy that died mid-transaction has its transaction aborted when the next one starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer

from acesteps.kafka import connection
from acesteps.kafka.admin import topic_partitions
from acesteps.kafka.producer import transactional_producer
from acesteps.kafka.records import OutRecord
from acesteps.kafka.transactions import TransactionalProducer
from acesteps.messages import (
    CancelRequested,
    GenerationFailed,
    GenerationRequest,
    GenerationRevoked,
    ListenerCheckpoint,
    Message,
    decode,
)
from acesteps.topics import Topics
from listener.poller import Record

__all__ = ["KafkaSink", "checkpoint_key", "load_checkpoint", "transactional_id"]


def checkpoint_key(chain_id: int, contract: str) -> str:
    return f"{chain_id}:{contract.lower()}"


def transactional_id(topic_prefix: str, chain_id: int, contract: str) -> str:
    """One per (topics, chain, contract): a second copy of the same listener is fenced."""
    return f"{topic_prefix}.listener.{chain_id}.{contract.lower()}"


class KafkaSink:
    """`listener.poller.Sink` on a `TransactionalProducer` that it owns: a poll's records and
    its checkpoint are one transaction, written by the one commit path every service uses
    (every delivery awaited, the producer replaced after a failure). The poller then
    retries the same range."""

    def __init__(self, bootstrap: str, txn_id: str, topics: Topics, client_id: str) -> None:
        self._topics = topics
        self._txn = TransactionalProducer(
            lambda: transactional_producer(bootstrap, txn_id, client_id=client_id)
        )

    async def start(self) -> None:
        """Start the producer: fences an older copy and aborts the transaction it left."""
        await self._txn.start()

    async def stop(self) -> None:
        await self._txn.close()

    def _topic(self, record: Message) -> str:
        if isinstance(record, GenerationRequest | GenerationRevoked):
            return self._topics.requests
        if isinstance(record, GenerationFailed):
            return self._topics.failures
        if isinstance(record, CancelRequested):
            return self._topics.cancels
        raise TypeError(f"the listener does not write {type(record).__name__}")

    async def commit(self, records: Sequence[Record], checkpoint: ListenerCheckpoint) -> None:
        key = checkpoint_key(checkpoint.chain_id, checkpoint.contract)
        outputs = [OutRecord.message(self._topic(r), r.request_id, r) for r in records]
        outputs.append(OutRecord.message(self._topics.checkpoints, key, checkpoint))
        await self._txn.commit(outputs)


async def load_checkpoint(
    bootstrap: str, topics: Topics, chain_id: int, contract: str
) -> ListenerCheckpoint | None:
    """The last committed checkpoint of this chain + contract, if any.

    Reads the compacted topic from the start with read_committed, so an aborted
    transaction's checkpoint is never taken.
    """
    key = checkpoint_key(chain_id, contract).encode()
    consumer = AIOKafkaConsumer(
        **connection.options(),
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        # Every partition, from the broker: an unsubscribed consumer knows none of them
        # (aiokafka's partitions_for_topic answers None), and one checkpoint may sit anywhere.
        tps = await topic_partitions(bootstrap, [topics.checkpoints])
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
