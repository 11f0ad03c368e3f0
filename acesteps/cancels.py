"""What must stop: ``PREFIX.cancels.v1`` read whole, and the requests' deadlines.

`CancelView` tails the cancels topic (read_committed, no consumer group: every generator and
publisher reads every partition from the start) into a map of request id -> the latest
`CancelRequested`. `why_stop` says whether a request must stop now, and why: it was canceled
(by its API key or on chain) or its deadline passed.

A worker checks without waiting where a stale answer only costs work (the generator: before
its model work and between denoising steps); the publisher, the last step before a track is
registered, first waits until the view has read everything the topic held when it asked
(`CancelView.caught_up`), so a cancel that Kafka acknowledged before that moment is always
honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from acesteps.kafka.admin import topic_partitions
from acesteps.kafka.consuming import reader
from acesteps.messages import TYPE_HEADER, CancelRequested, GenerationCanceled, decode
from acesteps.origin import RequestOrigin

__all__ = ["CancelView", "Stop", "why_stop"]

log = logging.getLogger(__name__)

Reason = Literal["requested", "deadline", "chain"]
Stage = Literal["generator", "publisher"]


@dataclass(frozen=True)
class Stop:
    """Why a request must stop, in the words `GenerationCanceled` carries."""

    reason: Reason
    message: str

    def record(
        self, origin: RequestOrigin, request_id: str, stage: Stage, when: str
    ) -> GenerationCanceled:
        """The outcome a worker writes when it stops the request ``when`` (its own words)."""
        return GenerationCanceled(
            request_id=request_id,
            stage=stage,
            reason=self.reason,
            message=f"{self.message}; {when}",
            source=origin.source,
            chain=origin.chain,
        )


class CancelView:
    """The cancels topic, read from the start and followed, in memory."""

    def __init__(self, bootstrap: str, topic: str, client_id: str = "acesteps-cancels") -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._client_id = client_id
        self._canceled: dict[str, CancelRequested] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()

    def get(self, request_id: str) -> CancelRequested | None:
        return self._canceled.get(request_id)

    def add(self, cancel: CancelRequested) -> None:
        """Record a cancel (what the reader does for each record; tests call it too)."""
        self._canceled[cancel.request_id] = cancel

    async def start(self) -> None:
        """Assign every partition from the start, and read until caught up."""
        self._partitions = await topic_partitions(self._bootstrap, [self._topic])
        self._consumer = reader(self._bootstrap, self._client_id)
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._follow(), name="cancels")
        await self.caught_up()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def caught_up(self, timeout_s: float = 30.0) -> None:
        """Return once every record the topic held at the call has been read (raises
        TimeoutError after ``timeout_s``, KafkaError when the broker cannot answer)."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the cancel view is not started")
        ends = await consumer.end_offsets(self._partitions)  # read_committed: the stable ones

        def read_all() -> bool:
            if self._task is None or self._task.done():
                raise RuntimeError("the cancel view stopped reading")
            return all(self._positions.get(tp, -1) >= end for tp, end in ends.items())

        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(read_all)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self._read(record.headers, record.value)
                # Past transaction markers too, which no record shows.
                for tp in self._partitions:
                    self._positions[tp] = await self._consumer.position(tp)
            except Exception as exc:  # a broker away for a moment: the consumer reconnects
                log.warning("reading the cancels failed (%r); again in 1 s", exc)
                await asyncio.sleep(1.0)
                continue
            async with self._progress:
                self._progress.notify_all()

    def _read(self, headers: object, value: bytes | None) -> None:
        kind = dict(headers or ()).get(TYPE_HEADER)  # type: ignore[call-overload]
        if kind != CancelRequested.__name__.encode() or value is None:
            return  # another record type, or a tombstone: nothing to stop
        try:
            self.add(decode(CancelRequested, value))
        except ValueError as exc:
            log.warning("an unreadable record on the cancels topic was skipped (%s)", exc)


def why_stop(
    view: CancelView | None,
    request_id: str,
    deadline: datetime | None,
    now: datetime | None = None,
) -> Stop | None:
    """Why ``request_id`` must stop now; None when it may go on."""
    cancel = view.get(request_id) if view is not None else None
    if cancel is not None:
        if cancel.reason == "chain":
            return Stop("chain", "canceled on chain by its requester (refunded by the contract)")
        return Stop("requested", f"canceled by its API key ({cancel.by})")
    now = now or datetime.now(UTC)
    if deadline is not None and now >= deadline:
        return Stop("deadline", f"its deadline {deadline.isoformat()} passed")
    return None
