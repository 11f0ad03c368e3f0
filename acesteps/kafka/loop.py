"""The consume-transform-produce loop every Kafka service runs.

Reads the ``config.topics`` (``PREFIX.requests.v1`` for the generator, ``PREFIX.audio.v1``
for the publisher, ...) with ``isolation_level=read_committed`` in consumer group
``config.group_id``; writes what the handler returns (``PREFIX.audio.v1``,
``PREFIX.tracks.v1``, ...) and dead letters (``PREFIX.failures.v1``,
``PREFIX.deadletter.v1``, see `acesteps.kafka.records`).

For each batch from ``getmany``:

1. call ``handler(record, deps)`` for each record, in partition order; it returns the
   records to produce (`OutRecord`). Handling happens before the transaction opens, so a
   slow handler (a GPU generation) does not run into ``transaction_timeout_ms``;
2. commit the outputs and the offsets of the handled records in one transaction
   (`acesteps.kafka.transactions.TransactionalProducer`, the one commit path of every
   service: offsets first, every delivery awaited, the producer replaced after a failure);
3. on a failed transaction: seek back to the batch's first offsets, back off, and handle
   the batch again.

So the outputs of a record and the consumption of the record are committed together or not
at all: a crash before the commit means the record is handled again and its earlier outputs
were aborted, which read_committed consumers never see.

What a handler raises decides the record's fate (`acesteps.kafka.consuming.Judge`: dead
letter, or retry after a back-off); when a record is to be retried, the records handled
before it are committed, and the loop seeks back to it. A handler that knows more about a
failed request than the loop does (its source, its chain origin, for a refund) returns its
own `GenerationFailed` as an output instead of raising. The loop stops (raises) only when
the producer is fenced: another process took this transactional id, and a zombie must not
write.

aiokafka 0.14 against Kafka 4.4, checked here (tests/integration/test_kafka_transactions.py):

- aiokafka has no KIP-447: TxnOffsetCommit v0 carries no group generation, so the broker
  cannot fence a member that lost its partitions. The loop (a) uses a transactional id per
  instance (stable across restarts, unique, given by the caller: `LoopConfig`); (b) holds a
  lock around each batch that the rebalance listener takes, so a rebalance waits until the
  batch's transaction ended before this member gives its partitions up, and drops a batch
  fetched before a rebalance that began before the batch took the lock; (c) refuses to
  commit a batch older than ``max_poll_interval_ms``, fetched before the process stood still
  for a session, or in a group generation that has moved on (`acesteps.kafka.membership`):
  another member may already be handling the same records.
- aiokafka #1004 ("Unexpected error during batch delivery": an unhandled error code in the
  TxnOffsetCommit handler kills the producer's sender task) and #1098 (``KeyError`` in the
  same handler) did not occur against Kafka 4.4 in 1,500 single-record transactions over
  three partitions, in either order of offsets and records. The commit still adds the
  offsets before producing the records (the order reported to avoid #1004), and replaces
  the producer after any failed transaction, which also recovers from a dead sender task.
- aiokafka commits a transaction even if one of its batches failed, and a batch the broker
  refused (MessageSizeTooLarge from a topic's ``max.message.bytes``) leaves a gap in the
  producer's sequence numbers: every later produce to that partition failed with
  OutOfOrderSequenceNumber, abort after abort, until the producer was replaced (aiokafka
  has no KIP-360 epoch bump). `acesteps.kafka.transactions` handles both.
- Kafka 4 verifies that a transactional produce belongs to an ongoing transaction
  (KIP-890); for aiokafka's old Produce version it answers a produce that races the
  previous transaction's markers with NOT_ENOUGH_REPLICAS, which aiokafka retries (logged
  as a warning, harmless).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acesteps import logs
from acesteps.kafka.consuming import (
    RETRIES_EXHAUSTED,
    Gate,
    Judge,
    LagMeter,
    LoopConfig,
    OutputTooLargeError,
    Retry,
    check_sizes,
    make_consumer,
    seek,
    sleep_unless,
)
from acesteps.kafka.membership import MemberGuard
from acesteps.kafka.producer import transactional_producer
from acesteps.kafka.records import InRecord, OutRecord
from acesteps.kafka.transactions import NotOurs, TransactionalProducer, is_fatal

__all__ = [
    "RETRIES_EXHAUSTED",
    "Handler",
    "LoopConfig",
    "OutputTooLargeError",
    "Prefetch",
    "TransactionalLoop",
]

log = logging.getLogger(__name__)

D = TypeVar("D")
Handler = Callable[[InRecord, D], Awaitable[Sequence[OutRecord]]]
"""``async def handle(record, deps) -> outputs``: the whole of a service's Kafka logic."""
Prefetch = Callable[[Sequence[InRecord], D], Awaitable[None]]
"""``async def prefetch(records, deps)``: sees a whole batch before its records are handled
one by one, so a service can start work for all of them at once (the generator batches
them on the GPU). Outcomes still come only from the handler; a failing prefetch is logged
and ignored."""


@dataclass
class _Pass:
    """What handling one batch produced."""

    outputs: list[OutRecord] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to consume
    rewind: dict[TopicPartition, int] = field(default_factory=dict)  # first record not handled
    retry_in: float | None = None


class TransactionalLoop(Generic[D]):
    """Runs ``handler`` over ``config.topics`` with exactly-once output until stopped.

    ``producer_factory`` builds an unstarted transactional producer with
    ``config.transactional_id``; the default is
    `acesteps.kafka.producer.transactional_producer`. The loop calls it again when it must
    replace a broken producer.
    """

    def __init__(
        self,
        config: LoopConfig,
        handler: Handler[D],
        deps: D,
        *,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
        prefetch: Prefetch[D] | None = None,
    ) -> None:
        self.config = config
        self._handler = handler
        self._prefetch = prefetch
        self._deps = deps
        self._txn = TransactionalProducer(producer_factory or self._default_producer)
        self._judge = Judge(config)
        self._txn_failures = 0
        self._lag = LagMeter(config.group_id)
        self._gate = Gate(self._judge.forget, self._lag.forget)
        self._guard = MemberGuard(config.session_timeout_ms, config.max_poll_interval_ms)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (after the batch in progress) or the task is cancelled."""
        stop = stop or asyncio.Event()
        async with AsyncExitStack() as stack:
            # The producer first: its InitProducerId fences an older copy of this instance
            # and aborts the transaction that copy left open, before we read any offsets.
            await self._txn.start()
            stack.push_async_callback(self._txn.close)
            consumer = make_consumer(self.config)
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            consumer.subscribe(list(self.config.topics), listener=self._gate)
            self._guard.start()
            stack.push_async_callback(self._guard.stop)
            log.info(
                "consuming %s as group %s, transactional id %s",
                ", ".join(self.config.topics),
                self.config.group_id,
                self.config.transactional_id,
            )
            while not stop.is_set():
                batch = await consumer.getmany(
                    timeout_ms=self.config.poll_timeout_ms, max_records=self.config.max_records
                )
                # Read right after getmany, with no await in between: aiokafka hands out no
                # records while a rebalance is in progress, so this is the batch's rebalance.
                fetched_in = self._gate.rebalances
                generation = self._guard.generation(consumer)
                fetched_at = time.monotonic()
                await self._lag.observe(consumer)
                await self._guard.check_owner(
                    consumer, self._gate.assignments, self._txn, self.config.group_id
                )
                if not batch:
                    continue
                delay = await self._process(consumer, batch, (fetched_in, generation, fetched_at))
                if delay is not None:
                    await sleep_unless(stop, delay)

    def _default_producer(self) -> AIOKafkaProducer:
        # This module's `transactional_producer`: the crash tests' workers replace it here,
        # for this loop alone (tests/integration/*_worker.py).
        c = self.config
        return transactional_producer(
            c.bootstrap,
            c.transactional_id,
            client_id=c.client_id,
            transaction_timeout_ms=c.transaction_timeout_ms,
        )

    # ------------------------------------------------------------------ one batch

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[Any]],
        fetched: tuple[int, int | None, float],
    ) -> float | None:
        """Handle and commit one batch; returns how long to back off, if at all. ``fetched``:
        the rebalance count, group generation and time when the batch was fetched."""
        fetched_in, generation, fetched_at = fetched
        async with self._gate.lock:
            if self._gate.rebalances != fetched_in:
                # A rebalance began between getmany and here: these partitions may be
                # another member's now, and ours restart from the committed offsets.
                log.info("dropping a batch fetched before a rebalance")
                return None
            records = [InRecord.of(r) for tp in sorted(batch) for r in batch[tp]]
            firsts = {tp: batch[tp][0].offset for tp in batch}
            done = await self._handle(records)
            if not done.offsets:
                seek(consumer, done.rewind)
                return done.retry_in
            # Without KIP-447 the broker would take our offsets even if another member has
            # handled these records meanwhile (acesteps.kafka.membership).
            lost = self._guard.lost(consumer, fetched_at, generation)
            if lost is not None:
                log.warning("not committing %d records: %s", len(records), lost)
                seek(consumer, firsts)
                return None
            try:
                await self._txn.commit(
                    done.outputs,
                    done.offsets,
                    self.config.group_id,
                    still_ours=lambda: self._guard.lost(consumer, fetched_at, generation),
                )
            except NotOurs as exc:  # frozen while sending: aborted, not committed
                log.warning("not committing %d records: %s (aborted)", len(records), exc)
                seek(consumer, firsts)
                return None
            except Exception as exc:
                if is_fatal(exc):
                    raise
                self._txn_failures += 1
                delay = self.config.backoff.delay(self._txn_failures)
                log.warning(
                    "transaction of %d records failed (%r); again in %.2f s",
                    len(records),
                    exc,
                    delay,
                )
                seek(consumer, firsts)  # the producer was replaced; handle the batch again
                return delay
            self._txn_failures = 0
            seek(consumer, done.rewind)
            return done.retry_in

    async def _handle(self, records: Sequence[InRecord]) -> _Pass:
        done = _Pass()
        if self._prefetch is not None:
            try:
                await self._prefetch(records, self._deps)
            except Exception:  # an optimisation only: the handler still sees every record
                log.exception("prefetch of %d records failed", len(records))
        for i, record in enumerate(records):
            outcome = await self._handle_one(record)
            if isinstance(outcome, Retry):
                # Retry this record later; it and the batch's later records are not handled,
                # the ones before it are committed now (their work is not redone).
                done.retry_in = outcome.delay_s
                for later in records[i:]:
                    done.rewind.setdefault(
                        TopicPartition(later.topic, later.partition), later.offset
                    )
                break
            done.outputs.extend(outcome)
            done.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        return done

    async def _handle_one(self, record: InRecord) -> list[OutRecord] | Retry:
        """The record's outputs (or its dead letter), or the delay before trying it again."""
        try:
            async with asyncio.timeout(self.config.handler_timeout_s):
                with logs.about(record.request_id):
                    outputs = list(await self._handler(record, self._deps))
            check_sizes(outputs)
        except Exception as exc:  # the one broad catch of the services: the judge decides
            return self._judge.failed(record, exc)
        self._judge.succeeded(record)
        return outputs
