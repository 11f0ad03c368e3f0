"""The status projection: Kafka topics -> the status store -> whoever waits on a request.

Reads, read_committed and without a consumer group (every API replica reads everything),
``PREFIX.requests.v1``, ``PREFIX.progress.v1``, ``PREFIX.tracks.v1`` and
``PREFIX.failures.v1``; writes the store only. Each batch of records and the offsets after it
are applied in one store transaction, so after a restart the projection resumes exactly where
its store says. Records it cannot decode are counted and skipped: the services that wrote
them already dead-letter what they cannot read, and a status view must not stop on one.

`Hub` tells the API's waiters (a ``POST /api/generate`` that waits, an SSE stream) that a
request changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge

from acesteps.kafka.admin import topic_partitions
from acesteps.kafka.consuming import reader
from acesteps.messages import (
    TYPE_HEADER,
    GenerationCanceled,
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    GenerationRevoked,
    Message,
    RegistrationReorged,
    TrackFinalized,
    TrackPublished,
    decode,
)
from acesteps.topics import Topics
from listener.api.models import Generation
from listener.api.rows import Event, Offsets
from listener.api.store import Store

__all__ = ["Hub", "Projection"]

log = logging.getLogger(__name__)

RECORDS = Counter("acesteps_api_projection_records_total", "records read", ["outcome"])
LAG = Gauge("acesteps_api_projection_lag_records", "records not yet projected")

_KINDS: dict[bytes, type[Message]] = {
    m.__name__.encode(): m
    for m in (
        GenerationRequest,
        GenerationRevoked,
        GenerationProgress,
        TrackPublished,
        TrackFinalized,
        RegistrationReorged,
        GenerationFailed,
        GenerationCanceled,
    )
}


class Hub:
    """In-process fan-out of changed `Generation`s to the tasks waiting on them."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Queue[Generation]]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, request_id: str) -> Iterator[asyncio.Queue[Generation]]:
        queue: asyncio.Queue[Generation] = asyncio.Queue()
        self._waiters[request_id].add(queue)
        try:
            yield queue
        finally:
            self._waiters[request_id].discard(queue)
            if not self._waiters[request_id]:
                del self._waiters[request_id]

    def publish(self, generations: Sequence[Generation]) -> None:
        for g in generations:
            for queue in self._waiters.get(g.id, ()):
                queue.put_nowait(g)


def decode_record(record: ConsumerRecord[bytes, bytes]) -> Event | None:
    """(request id, message) of a record the projection understands, else None."""
    kind = _KINDS.get(dict(record.headers or ()).get(TYPE_HEADER, b""))
    if kind is None:
        return None
    message = decode(kind, record.value)
    return str(message.request_id), message  # type: ignore[attr-defined]


class Projection:
    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        store: Store,
        hub: Hub,
        *,
        client_id: str = "acesteps-api",
        max_records: int = 500,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = (topics.requests, topics.progress, topics.tracks, topics.failures)
        self._store = store
        self._hub = hub
        self._client_id = client_id
        self._max_records = max_records
        self.ready = asyncio.Event()  # set once the store has caught up with the topics
        self.running = False
        self.lag = 0

    async def run(self, stop: asyncio.Event) -> None:
        consumer = reader(self._bootstrap, self._client_id)
        await consumer.start()
        self.running = True
        try:
            partitions = await self._assign(consumer)
            measured = 0.0
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
                if batch:
                    await self._project(batch)
                # Cheap enough to ask the broker each idle poll and once a second when busy.
                if not batch or time.monotonic() - measured > 1.0:
                    await self._measure(consumer, partitions)
                    measured = time.monotonic()
        finally:
            self.running = False
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = await topic_partitions(self._bootstrap, self._topics)
        consumer.assign(partitions)
        stored = await self._store.offsets()
        for tp in partitions:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await consumer.seek_to_beginning(tp)
        log.info("projecting %d partitions of %s", len(partitions), ", ".join(self._topics))
        return partitions

    async def _project(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        events: list[Event] = []
        offsets: Offsets = {}
        for tp, records in batch.items():
            for record in records:
                try:
                    event = decode_record(record)
                except ValueError as exc:
                    RECORDS.labels("invalid").inc()
                    log.warning("%s/%d@%d skipped: %s", tp.topic, tp.partition, record.offset, exc)
                    continue
                if event is None:
                    RECORDS.labels("ignored").inc()
                    continue
                RECORDS.labels("applied").inc()
                events.append(event)
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
        changed = await self._store.apply(events, offsets)
        self._hub.publish(changed)

    async def _measure(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        ends = await consumer.end_offsets(partitions)
        # Under read_committed the end is the last stable offset; markers of transactions
        # occupy offsets no record is returned for, so position may sit just below it.
        lag = 0
        for tp in partitions:
            lag += max(0, ends[tp] - await consumer.position(tp))
        self.lag = lag
        LAG.set(self.lag)
        if self.lag == 0:
            self.ready.set()
