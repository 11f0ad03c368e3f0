"""What every consume loop shares (`acesteps.kafka.loop`, `acesteps.kafka.pipelined`): its
configuration, its consumer, the gate that holds a rebalance back while a batch commits, and
the judgement of a failed record (dead letter, or retry after a back-off, counting attempts).

What a handler raises decides the record's fate (`acesteps.errors`):

- `PermanentError`: dead-lettered with the error's ``code``;
- ``ValueError`` (pydantic's ``ValidationError`` included): the record did not decode;
  dead-lettered with code ``invalid_record``;
- `RetryableError`, a timeout, anything else: tried again after a back-off (`Backoff`); after
  ``max_attempts`` dead-lettered with code ``retries_exhausted``. An `UnavailableError` (a
  dependency is down) is retried for as long as it takes.

A dead letter is produced in the transaction that commits the record's offset, so a poison
record is neither lost nor handled twice, and a loop never stops on input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from prometheus_client import Gauge

from acesteps.backoff import Backoff
from acesteps.errors import InvalidRecordError, PermanentError, RetryableError, UnavailableError
from acesteps.kafka import connection
from acesteps.kafka.producer import DEFAULT_TRANSACTION_TIMEOUT_MS
from acesteps.kafka.records import MAX_REQUEST_SIZE, InRecord, OutRecord, Stage, dead_letter

__all__ = [
    "RETRIES_EXHAUSTED",
    "Gate",
    "Judge",
    "LagMeter",
    "LoopConfig",
    "OutputTooLargeError",
    "Retry",
    "check_sizes",
    "make_consumer",
    "one_line",
    "reader",
    "seek",
    "sleep_unless",
]

log = logging.getLogger("acesteps.kafka.loop")

RETRIES_EXHAUSTED: Final = "retries_exhausted"


class OutputTooLargeError(PermanentError):
    """A handler returned a record larger than ``max_request_size`` (1 MiB)."""

    code = "output_too_large"


@dataclass(frozen=True)
class LoopConfig:
    """What one loop instance reads, writes and is called.

    ``transactional_id`` must be stable across restarts of this instance and unique among
    the instances (aiokafka has no KIP-447). ``group_instance_id`` (static membership, e.g.
    the same value) lets a restarted instance take its partitions back without waiting
    ``session_timeout_ms`` for the group to drop the dead member. ``max_poll_interval_ms``
    must exceed the longest time a batch takes to handle.
    """

    bootstrap: str
    group_id: str
    transactional_id: str
    topics: tuple[str, ...]
    failures_topic: str
    deadletter_topic: str
    stage: Stage
    client_id: str = "acesteps"
    group_instance_id: str | None = None
    max_records: int = 16
    poll_timeout_ms: int = 500
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    handler_timeout_s: float | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("LoopConfig.topics is empty")
        if self.max_attempts < 1 or self.max_records < 1:
            raise ValueError("max_attempts and max_records must be at least 1")


def make_consumer(c: LoopConfig) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **connection.options(),
        bootstrap_servers=c.bootstrap,
        client_id=c.client_id,
        group_id=c.group_id,
        group_instance_id=c.group_instance_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        # A new group must not skip requests written before it first started.
        auto_offset_reset="earliest",
        session_timeout_ms=c.session_timeout_ms,
        heartbeat_interval_ms=c.heartbeat_interval_ms,
        max_poll_interval_ms=c.max_poll_interval_ms,
    )


def reader(bootstrap: str, client_id: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer of committed records without a group (its owner assigns the partitions),
    from the start of a partition it has no position in: a view that reads a whole topic."""
    return AIOKafkaConsumer(
        **connection.options(),
        **{
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            "isolation_level": "read_committed",
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": 100,
            **overrides,
        },
    )


@dataclass(frozen=True)
class Retry:
    """Handle the record again after ``delay_s``."""

    delay_s: float


class Gate(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds a rebalance back until the batch in progress has committed or aborted."""

    def __init__(self, *on_revoked: Callable[[Iterable[TopicPartition]], None]) -> None:
        self.lock = asyncio.Lock()
        self.rebalances = 0  # tells a batch fetched before a rebalance from one fetched after
        self.assignments = 0  # a loop checks it still owns its transactional id after each
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            self.rebalances += 1
            gone = list(revoked)
            for forget in self._on_revoked:
                forget(gone)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assignments += 1
        log.info("assigned %s", sorted(assigned))


LAG = Gauge(
    "acesteps_consumer_lag_records",
    "records of an assigned partition this consumer has not fetched yet (last stable offset "
    "minus position)",
    ["group", "topic", "partition"],
)


class LagMeter:
    """Sets `LAG` for the consumer's partitions, at most every ``every_s`` seconds.

    Measured against the last stable offset (the loops read committed records only), from what
    the consumer already knows: no request to the broker. A partition the consumer gives up
    (a rebalance) loses its series, so that the group's sum stays right.
    """

    def __init__(self, group: str, every_s: float = 1.0) -> None:
        self.group = group
        self.every_s = every_s
        self._next = 0.0

    async def observe(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_s
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)  # None before the partition's first fetch
            if end is None:
                continue
            position = await consumer.position(tp)
            LAG.labels(self.group, tp.topic, str(tp.partition)).set(max(0, end - position))

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            with contextlib.suppress(KeyError):
                LAG.remove(self.group, tp.topic, str(tp.partition))


class Judge:
    """The fate of a record whose handling failed, and the count of its attempts."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        self._attempts: dict[tuple[str, int, int], int] = {}

    def succeeded(self, record: InRecord) -> None:
        self._attempts.pop(_key(record), None)

    def failed(self, record: InRecord, exc: Exception) -> list[OutRecord] | Retry:
        """The record's dead letter, or when to try it again."""
        key = _key(record)
        if isinstance(exc, PermanentError):
            self._attempts.pop(key, None)
            log.warning("%s: %s: %s", record.where(), exc.code, exc)
            return [self.dead_letter(record, exc.code, str(exc) or type(exc).__name__)]
        if isinstance(exc, ValueError):
            self._attempts.pop(key, None)
            log.warning("%s: does not decode: %s", record.where(), exc)
            return [self.dead_letter(record, InvalidRecordError.code, one_line(exc))]
        attempts = self._attempts.get(key, 0) + 1
        if not isinstance(exc, RetryableError | TimeoutError):
            log.error("%s: unexpected error in handler", record.where(), exc_info=exc)
        if attempts >= self.config.max_attempts and not isinstance(exc, UnavailableError):
            self._attempts.pop(key, None)
            log.error("%s: giving up after %d attempts: %r", record.where(), attempts, exc)
            message = f"gave up after {attempts} attempts; last error: {one_line(exc)}"
            return [self.dead_letter(record, RETRIES_EXHAUSTED, message)]
        self._attempts[key] = attempts
        delay = self.config.backoff.delay(attempts)
        log.warning(
            "%s: attempt %d failed (%s); again in %.2f s",
            record.where(),
            attempts,
            one_line(exc),
            delay,
        )
        return Retry(delay)

    def dead_letter(self, record: InRecord, code: str, message: str) -> OutRecord:
        c = self.config
        try:
            return dead_letter(
                record,
                stage=c.stage,
                code=code,
                message=message,
                failures_topic=c.failures_topic,
                deadletter_topic=c.deadletter_topic,
            )
        except Exception:  # never lose the record because its dead letter would not build
            log.exception("%s: building the dead letter failed; writing it raw", record.where())
            return OutRecord(c.deadletter_topic, record.key, record.value, record.headers)

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._attempts = {k: v for k, v in self._attempts.items() if k[:2] not in gone}
        log.info("revoked %s", sorted(gone))


def _key(record: InRecord) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


def check_sizes(outputs: Sequence[OutRecord]) -> None:
    for out in outputs:
        size = out.size_estimate()
        if size > MAX_REQUEST_SIZE:
            raise OutputTooLargeError(
                f"output for {out.topic} is {size} bytes, over the {MAX_REQUEST_SIZE} limit"
            )


def seek(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    for tp, offset in positions.items():
        try:
            consumer.seek(tp, offset)
        except IllegalStateError:
            # No longer assigned: the new owner starts from the committed offset anyway.
            log.info("not seeking %s: no longer assigned", tp)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
