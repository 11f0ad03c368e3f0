"""The one way a service writes a Kafka transaction: `TransactionalProducer.commit`.

Used by the consume loop (`acesteps.kafka.loop`, records plus the consumed offsets) and by the
chain listener (`listener.sink`, records plus its checkpoint). One commit:

1. begin; add the consumed offsets first, when there are any (the order reported to avoid
   aiokafka #1004);
2. queue every record and await every delivery: aiokafka commits a transaction even when one
   of its batches failed (unlike the Java client), so a failed delivery must abort instead;
3. unless ``still_ours`` (the consume loop's membership check) now names a reason not to,
   commit. Records and offsets of a large batch take a while to send; a process frozen in
   that time (a zombie: its partitions given to another member, which handles the same
   records) would otherwise commit them on waking, and without KIP-447 in aiokafka the broker
   takes its offsets. The check right before EndTxn leaves only that one round trip open.

After any failure the transaction is aborted (with a timeout) and the producer replaced
under the same transactional id before the error is raised: a batch the broker refused
leaves a gap in the producer's sequence numbers that fails every later transaction
(aiokafka has no KIP-360 epoch bump), and a new producer gets a new epoch and fresh sequences;
its InitProducerId also aborts the transaction if the abort did not. The abort comes first
because it is how we learn that we were fenced: a new producer would otherwise fence the
instance that fenced us. Fencing (`is_fatal`) is raised as it is: another process owns the
transactional id now, and a zombie must not write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced, TransactionalIdAuthorizationFailed
from aiokafka.structs import OffsetAndMetadata

from acesteps.kafka.producer import send_record
from acesteps.kafka.records import OutRecord

__all__ = ["NotOurs", "TransactionalProducer", "is_fatal"]

log = logging.getLogger(__name__)

ABORT_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 30.0
# Errors after which this process must not write under its transactional id again.
_FATAL: Final = (ProducerFenced, TransactionalIdAuthorizationFailed)


class NotOurs(Exception):
    """The batch may be another member's now: its transaction was aborted, not committed."""


class TransactionalProducer:
    """Owns one transactional aiokafka producer, built by ``factory`` (unstarted, with the
    instance's stable transactional id), and replaces it after a failed transaction."""

    def __init__(self, factory: Callable[[], AIOKafkaProducer]) -> None:
        self._factory = factory
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer: its InitProducerId fences an older copy of this instance and
        aborts the transaction that copy left open."""
        self._producer = await self._new()

    async def _new(self) -> AIOKafkaProducer:
        producer = self._factory()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            _read_transaction_error(producer)
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await producer.stop()
            except Exception as exc:  # closing a broken producer: nothing left to save
                log.warning("closing the producer failed: %r", exc)

    async def commit(
        self,
        records: Sequence[OutRecord],
        offsets: Mapping[TopicPartition, int] | None = None,
        group_id: str | None = None,
        still_ours: Callable[[], str | None] | None = None,
    ) -> None:
        """Write ``records`` and, for a consumer ``group_id``, the next ``offsets`` to read,
        in one transaction (module docstring). Raises what failed, after recovering;
        `NotOurs` when ``still_ours`` gives a reason just before the commit."""
        if self._producer is None:  # a restart after a failure failed too: try again now
            self._producer = await self._new()
        producer = self._producer
        try:
            await producer.begin_transaction()
            if offsets:
                if group_id is None:
                    raise ValueError("offsets need the consumer group_id")
                meta = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
                await producer.send_offsets_to_transaction(meta, group_id)
            deliveries = []
            for record in records:
                delivery = await send_record(producer, record)
                # Whatever happens next, a failed delivery is read: an unread one logs a
                # traceback when collected.
                delivery.add_done_callback(_read_error)
                deliveries.append(delivery)
            for result in await asyncio.gather(*deliveries, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
            if still_ours is not None and (why := still_ours()) is not None:
                raise NotOurs(why)
            await producer.commit_transaction()
        except asyncio.CancelledError:
            # Shutting down mid-commit: abort now rather than leave read_committed consumers
            # of our output waiting for the transaction timeout.
            await self._abort_quietly()
            raise
        except Exception as exc:
            if is_fatal(exc):
                raise
            await self._recover()
            raise

    async def check_owner(self, offsets: Mapping[TopicPartition, int], group_id: str) -> None:
        """Prove that no newer process took this transactional id: a transaction that adds
        ``offsets`` (the consumer's positions) for ``group_id``, then aborts, so nothing is
        written. A fenced producer raises `ProducerFenced` here (fatal: the caller stops);
        any other failure is logged and the producer replaced, as after a failed commit."""
        if self._producer is None:
            self._producer = await self._new()
        producer = self._producer
        meta = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
        try:
            await producer.begin_transaction()
            await producer.send_offsets_to_transaction(meta, group_id)
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                await producer.abort_transaction()
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.warning("checking the transactional id failed (%r)", exc)
            await self._recover()

    async def _recover(self) -> None:
        """Abort the failed transaction, then start a fresh producer (module docstring)."""
        producer = self._producer
        if producer is not None:
            try:
                async with asyncio.timeout(ABORT_TIMEOUT_S):
                    await producer.abort_transaction()
            except Exception as exc:
                if is_fatal(exc):
                    raise
                log.info("abort failed (%r)", exc)
        await self.close()
        try:
            await self.start()
        except Exception as exc:
            log.warning("restarting the producer failed (%r); will retry", exc)

    async def _abort_quietly(self) -> None:
        if self._producer is not None:
            try:
                async with asyncio.timeout(ABORT_TIMEOUT_S):
                    await self._producer.abort_transaction()
            except Exception as exc:  # best effort; the next start aborts it anyway
                log.info("abort on shutdown failed: %r", exc)


def is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it chains from means "stop writing under this id"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _FATAL):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _read_error(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _read_transaction_error(producer: AIOKafkaProducer) -> None:
    """Mark the error aiokafka left on its transaction future as read.

    After a fatal error (fencing, a dead sender task) aiokafka sets the error on a future
    that only ``commit_transaction``/``abort_transaction`` await, and neither can run in
    that state. Left unread, asyncio logs "Future exception was never retrieved" with a
    traceback when the future is collected, from wherever the collector runs; on CPython
    3.11.7, inside ``ast.parse`` (pytest's assertion rewriting), that nested traceback
    formatting raised "SystemError: AST constructor recursion depth mismatch".
    """
    manager = getattr(producer, "_txn_manager", None)  # private: no public accessor
    waiter = getattr(manager, "_transaction_waiter", None)
    if isinstance(waiter, asyncio.Future) and waiter.done():
        _read_error(waiter)
