"""Producer factories and the one way a service writes a message.

Two kinds, both with ``acks=all`` and idempotence (no duplicates from the producer's own
retries) and both with ``max_request_size`` at 1 MiB, so no record exceeds what a managed
Kafka accepts by default:

- `idempotent_producer`: the HTTP listener writes ``PREFIX.requests.v1`` one request at a
  time; the request id (from ``Idempotency-Key``) makes a client retry land on the same key.
- `transactional_producer`: every consume-transform-produce service and the chain listener.
  aiokafka has no KIP-447 support (its TxnOffsetCommit carries no consumer-group metadata),
  so a zombie is fenced only through the transactional id: it must be stable across
  restarts of an instance and unique among the instances (``generator-<host>-<n>``). A
  restarted instance's first InitProducerId bumps the epoch, which fences the old process
  and aborts the transaction it left open.

The factories return producers that are not started; callers start and stop them (through
an ``AsyncExitStack``).
"""

from __future__ import annotations

from typing import Any, Final

from aiokafka import AIOKafkaProducer

from acesteps.kafka import connection
from acesteps.kafka.records import MAX_REQUEST_SIZE, OutRecord
from acesteps.messages import Message

__all__ = [
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "idempotent_producer",
    "send_message",
    "send_record",
    "transactional_producer",
]

DEFAULT_TRANSACTION_TIMEOUT_MS: Final = 60_000
"""How long the broker keeps a transaction open before aborting it itself. A crashed
instance that is not restarted (so no InitProducerId aborts its transaction) holds back
read_committed consumers of the partitions it wrote for at most this long."""


def idempotent_producer(
    bootstrap: str, *, client_id: str = "acesteps", **overrides: Any
) -> AIOKafkaProducer:
    """A producer whose retries never duplicate a record (``enable_idempotence``)."""
    return AIOKafkaProducer(
        **_common(bootstrap, client_id),
        enable_idempotence=True,
        **overrides,
    )


def transactional_producer(
    bootstrap: str,
    transactional_id: str,
    *,
    client_id: str = "acesteps",
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
    cls: type[AIOKafkaProducer] = AIOKafkaProducer,
    **overrides: Any,
) -> AIOKafkaProducer:
    """A producer for Kafka transactions under a stable, per-instance ``transactional_id``.

    ``cls`` lets a caller wrap the producer (instrumentation, the crash test's worker).
    """
    if not transactional_id:
        raise ValueError("a transactional producer needs a non-empty transactional_id")
    producer: AIOKafkaProducer = cls(
        **_common(bootstrap, client_id),
        transactional_id=transactional_id,
        transaction_timeout_ms=transaction_timeout_ms,
        **overrides,
    )
    return producer


def _common(bootstrap: str, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "max_request_size": MAX_REQUEST_SIZE,
        **connection.options(),
    }


async def send_message(producer: AIOKafkaProducer, topic: str, key: str, message: Message) -> Any:
    """Queue ``message`` on ``topic`` under ``key`` (a request id); returns the delivery future.

    Await the returned future (or commit the transaction, after awaiting it) to know the
    record is written: in a transaction, aiokafka commits even when a batch failed, so the
    loop awaits every future before committing.
    """
    return await send_record(producer, OutRecord.message(topic, key, message))


async def send_record(producer: AIOKafkaProducer, record: OutRecord) -> Any:
    """Queue one `OutRecord`; returns the delivery future."""
    return await producer.send(
        record.topic, value=record.value, key=record.key, headers=list(record.headers)
    )
