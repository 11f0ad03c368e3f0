"""A consume loop for work done a batch at a time and finished later, several batches in flight.

The publisher's registration is one transaction for many tracks, and a transaction takes a
block: handled record by record (`acesteps.kafka.loop`) it registers one track per block.
Here a `BatchHandler` prepares each record as it is read, then starts one action for the
batch (`submit`: sends the transaction) and finishes it later (waits for the confirmations),
while the loop reads and submits the next batches. A batch of records in flight is a flight:

1. **Fill**: ``getmany`` until ``batch_size`` items are prepared or ``fill_wait_s`` has passed
   since the first; ``prepare(record)`` gives the record's outputs at once (a chunk: none; a
   dead letter) or an item for the batch. Records are prepared under the gate's lock, as the
   plain loop handles them, up to ``concurrency`` at once (each is judged in order).
2. **Submit and finish** in a task: ``submit(items)`` returns the coroutine that finishes the
   batch, which gives each item's outputs or exception.
3. **Commit, in order**: a flight's outputs and the offsets after its records, in one Kafka
   transaction (`acesteps.kafka.transactions`), once its task is done and every earlier
   flight has committed. Up to ``max_in_flight`` flights wait at once.

Failures (the fate of a record is the `acesteps.kafka.consuming.Judge`'s, as in the plain
loop):

- an item's exception: dead letter, or retry: its partition is read again from that record
  (outputs of its later records are not committed) and the later flights are dropped;
- the flight's own exception (``submit`` or the finish raised): with several items and an
  error that could come from one of them (permanent, a value error, a bug), every item is
  read again and the next flights carry one item each until one succeeds, so one poison
  item cannot take a batch down with it; otherwise (or with one item) each item is judged;
- a record whose preparation is to be retried ends the fill; it and the records after it are
  read again after the back-off;
- a rebalance: flights not yet committed are dropped, and whoever owns the partitions reads
  their records again.

Dropped work is redone, never done twice: the handler's steps must be idempotent (the
publisher reads the chain before it registers, and the contract registers an id once). A
flight older than ``max_poll_interval_ms``, or whose member may have been dropped meanwhile
(`acesteps.kafka.membership`), is not committed: without KIP-447 nothing else would stop
the commit. On ``stop`` the flights
in the air are finished and committed (for up to ``stop_grace_s``); cancelling the loop
commits nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acesteps import logs
from acesteps.errors import RetryableError
from acesteps.kafka.consuming import (
    Gate,
    Judge,
    LagMeter,
    LoopConfig,
    Retry,
    check_sizes,
    make_consumer,
    seek,
    sleep_unless,
)
from acesteps.kafka.membership import MemberGuard
from acesteps.kafka.producer import transactional_producer
from acesteps.kafka.records import InRecord, OutRecord
from acesteps.kafka.transactions import TransactionalProducer, is_fatal

__all__ = ["BatchHandler", "Finish", "PipelinedLoop", "Pipelining"]

log = logging.getLogger(__name__)

D = TypeVar("D")
D_contra = TypeVar("D_contra", contravariant=True)
P = TypeVar("P")
ItemOutcome = Sequence[OutRecord] | Exception
Finish = Callable[[], Awaitable[Sequence[ItemOutcome]]]
"""Finishes a submitted batch: one outcome per item, in the items' order."""


class BatchHandler(Protocol[D_contra, P]):
    """A service's Kafka logic in two steps (`acesteps.kafka.pipelined`). Items must not be
    sequences (a sequence is the record's outputs)."""

    async def prepare(self, record: InRecord, deps: D_contra) -> P | Sequence[OutRecord]:
        """The record's outputs now, or an item for the batch; raises as a handler does."""
        ...

    async def submit(self, items: Sequence[P], deps: D_contra) -> Finish:
        """Start the batch's work; the coroutine function that finishes it."""
        ...


@dataclass(frozen=True)
class Pipelining:
    """How big a flight may get, how long it waits to fill, how many are in the air."""

    batch_size: int = 50
    fill_wait_s: float = 0.2
    max_in_flight: int = 4
    stop_grace_s: float = 30.0
    concurrency: int = 8
    """Records prepared at once (the rest of a fill waits its turn, in order)."""

    def __post_init__(self) -> None:
        if min(self.batch_size, self.max_in_flight, self.concurrency) < 1 or self.fill_wait_s < 0:
            raise ValueError(
                "need batch_size >= 1, max_in_flight >= 1, concurrency >= 1, fill_wait_s >= 0"
            )


@dataclass
class _Entry:
    """A handled record's outputs (its offset commits with them)."""

    tp: TopicPartition
    offset: int
    outputs: list[OutRecord]


@dataclass
class _Flight(Generic[P]):
    rebalances: int
    generation: int | None  # the group's, when the flight began (MemberGuard)
    started: float = field(default_factory=time.monotonic)
    entries: list[_Entry] = field(default_factory=list)
    items: list[tuple[InRecord, P]] = field(default_factory=list)
    firsts: dict[TopicPartition, int] = field(default_factory=dict)
    rewind: dict[TopicPartition, int] = field(default_factory=dict)
    """Where the fill stopped (read again at once: the next flight starts there)."""
    deadline: float | None = None
    """When the fill ends (``fill_wait_s`` after the first item), unless every slot is taken."""
    redo: dict[TopicPartition, int] = field(default_factory=dict)
    """Items to try again, found when the flight landed: later flights are dropped."""
    retry_in: float | None = None
    task: asyncio.Task[Sequence[ItemOutcome]] | None = None

    def add(self, record: InRecord, outputs: list[OutRecord]) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self.firsts.setdefault(tp, record.offset)
        self.entries.append(_Entry(tp, record.offset, outputs))

    def done(self) -> bool:
        return self.task is None or self.task.done()

    def drop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class PipelinedLoop(Generic[D, P]):
    """Runs a `BatchHandler` over ``config.topics`` with exactly-once output until stopped."""

    def __init__(
        self,
        config: LoopConfig,
        handler: BatchHandler[D, P],
        deps: D,
        pipelining: Pipelining | None = None,
        *,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self.config = config
        self.pipelining = pipelining or Pipelining()
        self._handler, self._deps = handler, deps
        self._txn = TransactionalProducer(producer_factory or self._default_producer)
        self._judge = Judge(config)
        self._lag = LagMeter(config.group_id)
        self._gate = Gate(self._judge.forget, self._lag.forget)
        self._guard = MemberGuard(config.session_timeout_ms, config.max_poll_interval_ms)
        self._flights: deque[_Flight[P]] = deque()
        self._resume_at = 0.0  # no new fill before (a back-off)
        self._solo = False  # one item per flight until one succeeds
        self._txn_failures = 0

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

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        async with AsyncExitStack() as stack:
            await self._txn.start()  # fences an older copy of this instance first
            stack.push_async_callback(self._txn.close)
            consumer = make_consumer(self.config)
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            stack.callback(self._drop_all)
            consumer.subscribe(list(self.config.topics), listener=self._gate)
            self._guard.start()
            stack.push_async_callback(self._guard.stop)
            log.info(
                "consuming %s as group %s, transactional id %s, batches of up to %d, %d in flight",
                ", ".join(self.config.topics),
                self.config.group_id,
                self.config.transactional_id,
                self.pipelining.batch_size,
                self.pipelining.max_in_flight,
            )
            while not stop.is_set():
                await self._step(consumer, stop)
            await self._land(consumer)

    async def _step(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        now = time.monotonic()
        if now >= self._resume_at:
            flight = await self._fill(consumer, short=bool(self._flights))
            if flight is not None:
                if flight.items:
                    await self._slot()
                    flight.task = asyncio.create_task(self._submit(flight))
                self._flights.append(flight)
        elif self._flights and self._flights[0].task is not None:
            # Backing off: wait for the oldest flight to land.
            await asyncio.wait({self._flights[0].task}, timeout=self.config.poll_timeout_ms / 1000)
        elif not self._flights:
            await sleep_unless(stop, self._resume_at - now)
        await self._commit_done(consumer)

    def _in_the_air(self) -> set[asyncio.Task[Sequence[ItemOutcome]]]:
        return {f.task for f in self._flights if f.task is not None and not f.task.done()}

    async def _slot(self) -> None:
        """Until fewer than ``max_in_flight`` flights are in the air."""
        while len(tasks := self._in_the_air()) >= self.pipelining.max_in_flight:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)

    async def _land(self, consumer: AIOKafkaConsumer) -> None:
        """On stop: finish and commit the flights in the air, for up to ``stop_grace_s``."""
        tasks = [f.task for f in self._flights if f.task is not None]
        if tasks:
            log.info("stopping: finishing %d flight(s) in the air", len(tasks))
            await asyncio.wait(tasks, timeout=self.pipelining.stop_grace_s)
        await self._commit_done(consumer)
        if self._flights:
            log.warning("stopping: %d flight(s) unfinished; read again later", len(self._flights))

    def _drop_all(self) -> None:
        for flight in self._flights:
            flight.drop()
        self._flights.clear()

    # ------------------------------------------------------------------ 1. fill

    async def _fill(self, consumer: AIOKafkaConsumer, *, short: bool) -> _Flight[P] | None:
        """Read and prepare records into a new flight; None when nothing came.

        The fill ends when the flight is full, or ``fill_wait_s`` after its first item; while
        every slot is taken it goes on filling, since the flight could not take off anyway.
        """
        c, p = self.config, self.pipelining
        limit = 1 if self._solo else p.batch_size
        flight: _Flight[P] | None = None
        while flight is None or (len(flight.items) < limit and flight.retry_in is None):
            now, deadline = time.monotonic(), flight.deadline if flight else None
            if deadline is not None and now >= deadline:
                if self._over(flight):
                    break
                wait_s = 0.05  # no slot yet: more items meanwhile, and look again soon
            else:
                wait_s = (deadline - now) if deadline is not None else c.poll_timeout_ms / 1000
            if short and deadline is None:
                wait_s = min(wait_s, 0.05)  # flights are waiting: commit them promptly
            batch = await consumer.getmany(
                timeout_ms=max(1, int(wait_s * 1000)), max_records=c.max_records
            )
            fetched_in = self._gate.rebalances
            generation = self._guard.generation(consumer)
            await self._lag.observe(consumer)
            await self._guard.check_owner(
                consumer, self._gate.assignments, self._txn, self.config.group_id
            )
            if not batch:
                if deadline is None:
                    break  # nothing came: let the flights in the air be committed
                continue
            async with self._gate.lock:
                if self._gate.rebalances != fetched_in:
                    log.info("dropping records fetched before a rebalance")
                    return None
                if flight is None:
                    flight = _Flight(rebalances=self._gate.rebalances, generation=generation)
                elif flight.rebalances != self._gate.rebalances:
                    return None  # a rebalance between two reads of this fill
                records = [InRecord.of(r) for tp in sorted(batch) for r in batch[tp]]
                await self._prepare(flight, records, limit)
        if flight is not None and flight.rewind:
            seek(consumer, flight.rewind)
            self._resume_at = time.monotonic() + (flight.retry_in or 0.0)
        return flight

    def _over(self, flight: _Flight[P] | None) -> bool:
        """True once ``flight`` has waited its ``fill_wait_s`` and a slot is free for it."""
        return (
            flight is not None
            and flight.deadline is not None
            and time.monotonic() >= flight.deadline
            and len(self._in_the_air()) < self.pipelining.max_in_flight
        )

    async def _prepare(self, flight: _Flight[P], records: list[InRecord], limit: int) -> None:
        """Prepare ``records`` into ``flight``, up to ``concurrency`` at once and never more
        than it has room for, judged in order; stops at the first record to retry, or when
        the flight is full (that record and the later ones are read again; what was
        prepared of them is redone then)."""
        running: deque[tuple[InRecord, asyncio.Task[P | Sequence[OutRecord] | Exception]]]
        running = deque()
        ahead = iter(records)
        stopped_at: InRecord | None = None
        try:
            while True:
                while (
                    len(running) < self.pipelining.concurrency
                    and len(flight.items) + len(running) < limit
                    and not self._over(flight)
                ):
                    record = next(ahead, None)
                    if record is None:
                        break
                    running.append((record, asyncio.create_task(self._run_prepare(record))))
                if not running:
                    stopped_at = next(ahead, None)  # full, or over (or all prepared: None)
                    if stopped_at is not None:
                        flight.retry_in = 0.0
                    break
                record, task = running.popleft()
                outcome = self._judged(record, await task)
                if isinstance(outcome, Retry):
                    flight.retry_in, stopped_at = outcome.delay_s, record
                    break
                if isinstance(outcome, list):
                    flight.add(record, outcome)
                else:
                    flight.add(record, [])
                    flight.items.append((record, outcome))
                    if flight.deadline is None:
                        flight.deadline = time.monotonic() + self.pipelining.fill_wait_s
        finally:
            for _, task in running:
                task.cancel()
            await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        if stopped_at is not None:
            later = [stopped_at, *(r for r, _ in running), *ahead]
            for r in later:
                flight.rewind.setdefault(TopicPartition(r.topic, r.partition), r.offset)

    async def _run_prepare(self, record: InRecord) -> P | Sequence[OutRecord] | Exception:
        try:
            async with asyncio.timeout(self.config.handler_timeout_s):
                with logs.about(record.request_id):
                    return await self._handler.prepare(record, self._deps)
        except Exception as exc:
            return exc

    def _judged(
        self, record: InRecord, result: P | Sequence[OutRecord] | Exception
    ) -> list[OutRecord] | Retry | P:
        try:
            if isinstance(result, Exception):
                raise result
            if isinstance(result, Sequence) and not isinstance(result, str | bytes):
                outputs = list(result)
                check_sizes(outputs)
                self._judge.succeeded(record)
                return outputs
        except Exception as exc:
            return self._judge.failed(record, exc)
        return result

    # ------------------------------------------------------------------ 2. submit and finish

    async def _submit(self, flight: _Flight[P]) -> Sequence[ItemOutcome]:
        finish = await self._handler.submit([item for _, item in flight.items], self._deps)
        outcomes = list(await finish())
        if len(outcomes) != len(flight.items):
            raise RuntimeError(f"{len(outcomes)} outcomes for {len(flight.items)} items")
        return outcomes

    # ------------------------------------------------------------------ 3. commit

    async def _commit_done(self, consumer: AIOKafkaConsumer) -> None:
        while self._flights and self._flights[0].done():
            flight = self._flights.popleft()
            async with self._gate.lock:
                if flight.rebalances != self._gate.rebalances:
                    log.info(
                        "dropping %d flight(s) handled before a rebalance", len(self._flights) + 1
                    )
                    flight.drop()
                    self._drop_all()
                    return
                await self._commit(consumer, flight)

    async def _commit(self, consumer: AIOKafkaConsumer, flight: _Flight[P]) -> None:
        self._settle(flight)
        lost = self._guard.lost(consumer, flight.started, flight.generation)
        if lost is not None:
            log.warning("not committing a flight of %d records: %s", len(flight.entries), lost)
            self._rewind({**flight.firsts}, consumer, delay=None)
            return
        cut = {**flight.rewind}
        for tp, offset in flight.redo.items():
            cut[tp] = min(cut.get(tp, offset), offset)
        entries = [e for e in flight.entries if e.offset < cut.get(e.tp, e.offset + 1)]
        outputs = [out for e in entries for out in e.outputs]
        offsets: dict[TopicPartition, int] = {}
        for e in entries:
            offsets[e.tp] = max(offsets.get(e.tp, 0), e.offset + 1)
        if offsets:
            try:
                await self._txn.commit(outputs, offsets, self.config.group_id)
            except Exception as exc:
                if is_fatal(exc):
                    raise
                self._txn_failures += 1
                delay = self.config.backoff.delay(self._txn_failures)
                log.warning("transaction of a flight failed (%r); again in %.2f s", exc, delay)
                self._rewind({**flight.firsts}, consumer, delay=delay)
                return
            self._txn_failures = 0
        if flight.redo:
            self._rewind(cut, consumer, delay=flight.retry_in)

    def _settle(self, flight: _Flight[P]) -> None:
        """Turn the flight's task into entries (outputs per item record) and rewinds."""
        if flight.task is None:
            return
        try:
            outcomes: Sequence[ItemOutcome] = flight.task.result()
        except Exception as exc:
            if len(flight.items) > 1 and _maybe_an_item(exc):
                log.warning(
                    "a batch of %d failed (%r): trying its items one by one", len(flight.items), exc
                )
                self._solo = True
                for record, _ in flight.items:
                    tp = TopicPartition(record.topic, record.partition)
                    flight.redo[tp] = min(flight.redo.get(tp, record.offset), record.offset)
                flight.retry_in = max(flight.retry_in or 0.0, 0.0)
                return
            outcomes = [exc] * len(flight.items)
        all_ok = True
        for (record, _), outcome in zip(flight.items, outcomes, strict=True):
            judged: list[OutRecord] | Retry
            if isinstance(outcome, Exception):
                all_ok = False
                judged = self._judge.failed(record, outcome)
            else:
                judged = list(outcome)
                try:
                    check_sizes(judged)
                    self._judge.succeeded(record)
                except Exception as exc:
                    all_ok = False
                    judged = self._judge.failed(record, exc)
            if isinstance(judged, Retry):
                tp = TopicPartition(record.topic, record.partition)
                flight.redo[tp] = min(flight.redo.get(tp, record.offset), record.offset)
                flight.retry_in = max(flight.retry_in or 0.0, judged.delay_s)
            else:
                _entry_of(flight, record).outputs.extend(judged)
        if all_ok:
            self._solo = False

    def _rewind(
        self,
        positions: dict[TopicPartition, int],
        consumer: AIOKafkaConsumer,
        delay: float | None,
    ) -> None:
        """Read again from ``positions`` and from the first records of the later flights,
        which are dropped; no new flight for ``delay`` seconds."""
        for later in self._flights:
            for tp, offset in later.firsts.items():
                positions[tp] = min(positions.get(tp, offset), offset)
            later.drop()
        self._flights.clear()
        seek(consumer, positions)
        self._resume_at = time.monotonic() + (delay or 0.0)


def _entry_of(flight: _Flight[Any], record: InRecord) -> _Entry:
    tp = TopicPartition(record.topic, record.partition)
    for entry in flight.entries:
        if entry.tp == tp and entry.offset == record.offset:
            return entry
    raise KeyError(record.where())


def _maybe_an_item(exc: Exception) -> bool:
    """Whether a batch's own failure may come from one of its items (not from a dependency)."""
    return not isinstance(exc, RetryableError | TimeoutError)
