"""Finding and checking the chunks of a file on ``PREFIX.audio.v1``.

The generator writes a request's chunks and then its `AudioReady`, in one transaction and
under one key, so they sit in one partition with every chunk before the AudioReady; other
transactions (another generator's) may be interleaved. The publisher keeps no state between
records: on an AudioReady it reads the partition backwards from that offset (read_committed,
a window that doubles) until it has sequences ``0..total-1`` of that request. A crash can
then never lose chunks whose offsets were already committed.

Nothing corrupted is ever published: a sequence missing within the scan limit, a sequence
seen twice in the same file, chunks that disagree on ``total``, or bytes whose keccak256,
CID or size differ from the AudioReady's claims are permanent failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from acesteps.hashing import Keccak256
from acesteps.ipfs.unixfs import CidBuilder
from acesteps.kafka import connection
from acesteps.kafka.records import InRecord
from acesteps.messages import TYPE_HEADER, AudioChunk, AudioReady
from publisher.errors import PermanentPublisherError

__all__ = ["ChunkReader", "CorruptAudio", "MissingChunks", "assemble"]


class MissingChunks(PermanentPublisherError):
    code = "missing_chunks"


class CorruptAudio(PermanentPublisherError):
    code = "corrupt_audio"


class ChunkReader:
    """Random access to committed audio records, with a consumer of its own (no group)."""

    def __init__(self, bootstrap: str, scan_limit: int = 20_000) -> None:
        self._consumer = AIOKafkaConsumer(
            **connection.options(),
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=2 * 1024 * 1024,
            # Lookups read to a known offset: waiting at the log's end only adds latency.
            fetch_max_wait_ms=10,
            # The chunks' bytes are checked end to end (keccak256 and CID of the file, against
            # the AudioReady, in `assemble`), which CRC32C of each batch only repeats; it was
            # a sixth of the publisher's CPU (bench/publisher.py, profiled).
            check_crcs=False,
        )
        self._scan_limit = scan_limit
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _read(self, tp: TopicPartition, start: int, end: int) -> list[InRecord]:
        """Committed records of ``tp`` with offsets in [start, end)."""
        async with self._lock:  # one consumer, one position: lookups take turns
            self._consumer.assign([tp])
            self._consumer.seek(tp, start)
            out: list[InRecord] = []
            while await self._consumer.position(tp) < end:
                batch = await self._consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset < end:
                        out.append(InRecord.of(record))
            return out

    async def chunks_before(self, ready: InRecord, request_id: str, total: int) -> list[AudioChunk]:
        """The ``total`` chunks of ``request_id`` that precede the AudioReady ``ready``."""
        tp = TopicPartition(ready.topic, ready.partition)
        end = ready.offset
        window = total + 16
        found: dict[int, AudioChunk] = {}
        while True:
            start = max(0, end - window)
            # Newest first: the chunks closest to the AudioReady are the ones it describes.
            for record in reversed(await self._read(tp, start, end)):
                if record.key != request_id.encode() or record.header(TYPE_HEADER) != b"AudioChunk":
                    continue
                chunk = _parse(record)
                if chunk.total != total:
                    raise CorruptAudio(
                        f"chunk at offset {record.offset} says total {chunk.total}, "
                        f"AudioReady says {total}"
                    )
                if chunk.sequence in found:
                    raise CorruptAudio(f"chunk {chunk.sequence} appears twice")
                found[chunk.sequence] = chunk
                if len(found) == total:
                    return [found[i] for i in range(total)]
            scanned = ready.offset - start
            if start == 0 or scanned >= self._scan_limit:
                missing = sorted(set(range(total)) - set(found))
                raise MissingChunks(
                    f"chunks {missing[:10]} of {total} not found in the {scanned} records "
                    "before the AudioReady"
                )
            end = start
            window *= 2


def _parse(record: InRecord) -> AudioChunk:
    try:
        return AudioChunk.from_record(record.headers, record.value or b"")
    except ValueError as exc:
        raise CorruptAudio(f"chunk at offset {record.offset}: {exc}") from exc


def assemble(chunks: Sequence[AudioChunk], ready: AudioReady) -> bytes:
    """The file, after checking it is exactly what ``ready`` claims."""
    keccak, cid = Keccak256(), CidBuilder()
    for chunk in chunks:
        keccak.update(chunk.data)
        cid.update(chunk.data)
    data = b"".join(chunk.data for chunk in chunks)
    checks: list[tuple[str, Any, Any]] = [
        ("size", len(data), ready.size_bytes),
        ("audioHash", keccak.hexdigest(), ready.audio_hash),
        ("CID", cid.finish(), ready.cid),
    ]
    for name, computed, claimed in checks:
        if computed != claimed:
            raise CorruptAudio(
                f"{name} of the reassembled file is {computed}, AudioReady says {claimed}"
            )
    return data
