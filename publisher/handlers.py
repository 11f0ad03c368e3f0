"""The publisher's Kafka logic: plain async functions ``handle(record, deps) -> outputs``.

`handle_audio` reads ``PREFIX.audio.v1`` and writes ``PREFIX.tracks.v1``; for each
AudioReady:

1. find the request's chunks and check the file against the AudioReady's claims;
2. add it to Kubo (pinned) and check Kubo's CID against the local one; then ask the
   configured remote pinning services to pin it too (best effort, `publisher.remotepin`:
   their statuses go in ``TrackPublished.remote_pins`` and never block publishing);
3. register ``(requestId, audioHash, cid)`` on the contract (skipped when already there);
4. return the `TrackPublished`, which the loop commits with the consumed offsets.

Steps 2 and 3 are idempotent (content addressing; a registration is read before it is
sent), so a crash anywhere before the commit only repeats work, never the outcome.

`handle_failure` reads ``PREFIX.failures.v1`` and marks each request that is still pending
on chain as failed, which refunds its fee. It needs no ``source`` field: the contract knows
which ids were requested on chain, and `mark_failed` reads the status first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from acesteps.errors import InvalidRecordError, UnavailableError
from acesteps.ipfs.kubo import KuboClient, KuboError
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import TYPE_HEADER, AudioReady, GenerationFailed, TrackPublished
from acesteps.progress import NoProgress, Progress
from acesteps.registry import Registry
from acesteps.topics import Topics
from publisher.chunks import ChunkReader, CorruptAudio, assemble
from publisher.errors import ChainUnavailable, RetryablePublisherError
from publisher.registrar import mark_failed, register
from publisher.txsender import TxSender

__all__ = ["Deps", "IpfsUnavailable", "RemotePins", "handle_audio", "handle_failure"]


class IpfsUnavailable(RetryablePublisherError, UnavailableError):
    code = "ipfs_unavailable"


class RemotePins(Protocol):
    """`publisher.remotepin.RemotePinner`: service name -> status; never raises."""

    async def pin_all(self, cid: str, name: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class Deps:
    topics: Topics
    chunks: ChunkReader
    kubo: KuboClient
    registry: Registry
    sender: TxSender
    chain_id: int
    confirmations: int
    from_block: int
    gateway_url: str
    remote_pins: RemotePins
    progress: Progress = field(default_factory=NoProgress)


async def handle_audio(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    if record.header(TYPE_HEADER) == b"AudioChunk":
        return []  # read when the request's AudioReady arrives
    ready = decode_value(AudioReady, record)
    if record.request_id != ready.request_id:
        raise InvalidRecordError(f"AudioReady for {ready.request_id} under key {record.key!r}")

    # 1. The file, exactly as the generator described it.
    await deps.progress.report([ready.request_id], "publishing")
    chunks = await deps.chunks.chunks_before(record, ready.request_id, ready.chunks)
    data = assemble(chunks, ready)

    # 2. Pinned on IPFS under the CID we computed.
    try:
        added = await deps.kubo.add(data, pin=True)
    except KuboError as exc:
        raise IpfsUnavailable(f"adding {ready.cid} to IPFS: {exc}") from exc
    if added.cid != ready.cid:
        raise CorruptAudio(f"Kubo returned CID {added.cid}, computed {ready.cid}")
    # Best effort: a service that fails is recorded as such, publishing goes on.
    remote_pins = await deps.remote_pins.pin_all(ready.cid, f"acesteps-{ready.request_id}")

    # 3. Registered on chain.
    async with _chain_errors("registering"):
        reg = await register(
            deps.registry,
            deps.sender,
            ready.request_id,
            ready.audio_hash,
            ready.cid,
            deps.confirmations,
            from_block=deps.from_block,
        )

    # 4. Announced, in the transaction that consumes the AudioReady.
    track = TrackPublished(
        request_id=ready.request_id,
        audio_hash=ready.audio_hash,
        cid=ready.cid,
        urls=(f"ipfs://{ready.cid}", f"{deps.gateway_url}/ipfs/{ready.cid}"),
        chain_id=deps.chain_id,
        contract=deps.registry.address,
        tx_hash=reg.tx_hash,
        block_number=reg.block_number,
        format=ready.format,
        size_bytes=ready.size_bytes,
        duration_s=ready.duration_s,
        seed=ready.seed,
        model_id=ready.model_id,
        remote_pins=remote_pins,
    )
    return [OutRecord.message(deps.topics.tracks, ready.request_id, track)]


async def handle_failure(record: InRecord, deps: Any) -> Sequence[OutRecord]:
    failed = decode_value(GenerationFailed, record)
    reason = f"{failed.code}: {failed.message}"
    async with _chain_errors("marking failed"):
        await mark_failed(deps.registry, deps.sender, failed.request_id, reason, deps.confirmations)
    return []


@contextlib.asynccontextmanager
async def _chain_errors(doing: str) -> AsyncIterator[None]:
    """Connection failures of the node's reads become `ChainUnavailable` (retried)."""
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ChainUnavailable(f"{doing}: the chain node is unreachable ({exc!r})") from exc
