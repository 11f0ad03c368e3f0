"""The publisher's Kafka logic: plain async functions ``handle(record, deps) -> outputs``.

`handle_audio` reads ``PREFIX.audio.v1`` and writes ``PREFIX.tracks.v1``; for each
AudioReady:

1. a chain request must still be on chain: one that a reorg removed is not published;
2. find the request's chunks and check the file against the AudioReady's claims;
3. add it and its generation manifest (`publisher.manifests`) to Kubo (pinned) and check
   Kubo's CIDs against the local ones; then ask the
   configured remote pinning services to pin it too (best effort, `publisher.remotepin`:
   their statuses go in ``TrackPublished.remote_pins`` and never block publishing);
4. register ``(requestId, audioHash, cid, manifestHash, manifestCid)`` on the contract
   (skipped when already there):
   ``registerTrack`` for a chain request, ``registerOffchainTrack`` for an HTTP one;
5. return the `TrackPublished` (with the confirmations it has), which the loop commits with
   the consumed offsets. `publisher.finality` follows it until it is final.

Steps 3 and 4 are idempotent (content addressing; a registration is read before it is
sent), so a crash anywhere before the commit only repeats work, never the outcome.

`handle_failure` reads ``PREFIX.failures.v1`` and marks each request that is still pending
on chain as failed, which refunds its fee, and waits until that is final (a refund that a
reorg drops is sent again). It needs no ``source`` field: the contract knows which ids were
requested on chain, and `mark_failed` reads the status first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from acesteps.errors import InvalidRecordError, UnavailableError
from acesteps.ipfs.kubo import KuboClient, KuboError
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import TYPE_HEADER, AudioReady, GenerationFailed, TrackPublished
from acesteps.progress import NoProgress, Progress
from acesteps.registry import Registry, RequestStatus, Track
from acesteps.topics import Topics
from publisher.chunks import ChunkReader, CorruptAudio, assemble
from publisher.errors import (
    ChainUnavailable,
    ContractReverted,
    PermanentPublisherError,
    RetryablePublisherError,
)
from publisher.finality import FinalityDeps, wait_final
from publisher.manifests import pin_manifest
from publisher.registrar import mark_failed, register
from publisher.txsender import TxSender

__all__ = ["Deps", "IpfsUnavailable", "RemotePins", "handle_audio", "handle_failure"]

log = logging.getLogger(__name__)


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
    finality: FinalityDeps
    progress: Progress = field(default_factory=NoProgress)


async def handle_audio(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    if record.header(TYPE_HEADER) == b"AudioChunk":
        return []  # read when the request's AudioReady arrives
    ready = decode_value(AudioReady, record)
    if record.request_id != ready.request_id:
        raise InvalidRecordError(f"AudioReady for {ready.request_id} under key {record.key!r}")

    # 1. Still a request? A chain request a reorg removed is not published (the listener
    #    revokes it; if it comes back in another block, it is generated again).
    if not await _still_requested(deps, ready):
        return []

    # 2. The file, exactly as the generator described it.
    await deps.progress.report([ready.request_id], "publishing")
    chunks = await deps.chunks.chunks_before(record, ready.request_id, ready.chunks)
    data = assemble(chunks, ready)

    # 3. Pinned on IPFS under the CID we computed.
    try:
        added = await deps.kubo.add(data, pin=True)
    except KuboError as exc:
        raise IpfsUnavailable(f"adding {ready.cid} to IPFS: {exc}") from exc
    if added.cid != ready.cid:
        raise CorruptAudio(f"Kubo returned CID {added.cid}, computed {ready.cid}")
    # The generation manifest too: it is registered with the track.
    provenance = await pin_manifest(deps.kubo, ready)
    # Best effort: a service that fails is recorded as such, publishing goes on.
    remote_pins = await deps.remote_pins.pin_all(ready.cid, f"acesteps-{ready.request_id}")

    # 4. Registered on chain (not final yet: `publisher.finality` follows it from here).
    async with _chain_errors("registering"):
        try:
            reg = await register(
                deps.registry,
                deps.sender,
                ready.request_id,
                Track(ready.audio_hash, ready.cid),
                provenance,
                deps.confirmations,
                offchain_id=ready.offchain_id if ready.source == "http" else None,
                from_block=deps.from_block,
            )
        except ContractReverted as exc:
            # Removed by a reorg between step 1 and the send: not published, as in step 1.
            if exc.error_name == "NotPending" and not await _still_requested(deps, ready):
                return []
            raise

    # 5. Announced, in the transaction that consumes the AudioReady.
    track = TrackPublished(
        request_id=ready.request_id,
        audio_hash=ready.audio_hash,
        cid=ready.cid,
        urls=(f"ipfs://{ready.cid}", f"{deps.gateway_url}/ipfs/{ready.cid}"),
        chain_id=deps.chain_id,
        contract=deps.registry.address,
        tx_hash=reg.tx_hash,
        block_number=reg.block_number,
        block_hash=reg.block_hash,
        confirmations=reg.confirmations,
        manifest_hash=reg.provenance.manifest_hash,
        manifest_cid=reg.provenance.manifest_cid,
        source=ready.source,
        chain=ready.chain,
        offchain_id=ready.offchain_id,
        format=ready.format,
        size_bytes=ready.size_bytes,
        duration_s=ready.duration_s,
        seed=ready.seed,
        model_id=ready.model_id,
        remote_pins=remote_pins,
    )
    return [OutRecord.message(deps.topics.tracks, ready.request_id, track)]


async def _still_requested(deps: Deps, ready: AudioReady) -> bool:
    """False for a chain request that is not on this chain (any more): a reorg removed it.

    HTTP requests always are. A chain request is when the contract has it (pending, or
    registered or failed already: registration sorts those out). When it has not, the node
    may only be behind the listener's: then retry until it has the request's block.
    """
    if ready.source == "http":
        return True
    async with _chain_errors("reading the request"):
        status = await deps.registry.status(ready.request_id)
        if status is not RequestStatus.NONE:
            return True
        if ready.source is None:
            raise PermanentPublisherError(
                f"request {ready.request_id} is unknown to the contract and its AudioReady "
                "does not say where it came from (written by an older generator)"
            )
        head = await deps.registry.w3.eth.block_number
    if ready.chain is not None and head < ready.chain.block_number:
        raise RetryablePublisherError(
            f"the node is at block {head}, before the request's block {ready.chain.block_number}"
        )
    log.warning(
        "request %s is not on chain (its block %s was reorged out): not publishing it",
        ready.request_id,
        ready.chain.block_hash if ready.chain else "?",
    )
    return False


async def handle_failure(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    failed = decode_value(GenerationFailed, record)
    rid, registry = failed.request_id, deps.registry
    reason = f"{failed.code}: {failed.message}"
    async with _chain_errors("marking failed"):
        await mark_failed(registry, deps.sender, rid, reason, deps.confirmations)
        # Done once the refund is final: if a reorg drops it, the retry sends it again.
        if await registry.status(rid) is RequestStatus.FAILED:
            found = await wait_final(
                deps.finality, f"refund of {rid}", lambda: registry.failure(rid, deps.from_block)
            )
            if found is None:  # the node's logs lag behind its state
                raise RetryablePublisherError(f"request {rid} failed on chain, but no log yet")
    return []


@contextlib.asynccontextmanager
async def _chain_errors(doing: str) -> AsyncIterator[None]:
    """Connection failures of the node's reads become `ChainUnavailable` (retried)."""
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ChainUnavailable(f"{doing}: the chain node is unreachable ({exc!r})") from exc
