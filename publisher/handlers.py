"""The publisher's Kafka logic: plain async functions of a record (or a batch) and `Deps`.

`AudioBatches` reads ``PREFIX.audio.v1`` and writes ``PREFIX.tracks.v1`` through
`acesteps.kafka.pipelined.PipelinedLoop`. ``prepare`` (`prepare_audio`), for each AudioReady
as it is read:

1. a chain request must still be on chain: one that a reorg removed is not published (once
   its block would be final: until then the reorg may only have moved it, and the record is
   tried again); a
   request that must stop (canceled, past its deadline: `acesteps.cancels`) becomes a
   `GenerationCanceled` and nothing of it is pinned;
2. find the request's chunks and check the file against the AudioReady's claims;
3. add it and its generation manifest (`publisher.manifests`) to Kubo (pinned) and check
   Kubo's CIDs against the local ones; then ask the configured remote pinning services to
   pin it too (best effort, `publisher.remotepin`: their statuses go in
   ``TrackPublished.remote_pins`` and never block publishing).

``submit``, for a batch of those:

4. read every cancel Kafka holds until now (`CancelView.caught_up`) and drop the requests
   that must stop (each a `GenerationCanceled`); register every
   ``(requestId, audioHash, cid, manifestHash)`` of the rest of the batch in one
   ``registerTracks`` transaction (`publisher.registrar.submit_batch`; items registered
   already are read back, not sent), and return at once: the loop reads and submits the next
   batches while this one is mined;
5. once it has its confirmations: one `TrackPublished` per track (with the confirmations it
   has), which the loop commits with the consumed offsets. `publisher.finality` follows each
   one until it is final. A chain request the contract refused as not pending is not
   published when a reorg removed it (as in step 1), is canceled when its requester canceled
   it on chain, and is dead-lettered otherwise.

Steps 3 and 4 are idempotent (content addressing; a registration is read before it is
sent, and the contract registers an id once), so a crash anywhere before the commit only
repeats work, never the outcome.

`handle_failure` reads ``PREFIX.failures.v1`` and marks each request that is still pending
on chain as failed, which refunds its fee, and waits until that is final (a refund that a
reorg drops is sent again); it skips `GenerationCanceled` records (nothing to refund: a
request canceled on chain was refunded by the contract). It needs no ``source`` field: the
contract knows which ids were requested on chain, and `mark_failed` reads the status first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiokafka.errors import KafkaError

from acesteps.cancels import CancelView, Stop, why_stop
from acesteps.errors import InvalidRecordError, UnavailableError
from acesteps.ipfs.kubo import KuboClient, KuboError
from acesteps.kafka.pipelined import Finish
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import (
    TYPE_HEADER,
    AudioReady,
    GenerationCanceled,
    GenerationFailed,
    TrackPublished,
)
from acesteps.progress import NoProgress, Progress
from acesteps.registry import Provenance, Registry, RequestStatus, Track, TrackItem
from acesteps.topics import Topics
from publisher.chunks import ChunkReader, CorruptAudio, assemble
from publisher.errors import (
    ChainUnavailable,
    ContractReverted,
    PermanentPublisherError,
    RetryablePublisherError,
)
from publisher.finality import FinalityDeps, RequestAbsent, absence_final, wait_final
from publisher.manifests import pin_manifest
from publisher.registrar import Outcome, Registration, mark_failed, submit_batch
from publisher.txsender import TxSender

__all__ = [
    "AudioBatches",
    "Deps",
    "IpfsUnavailable",
    "Pinned",
    "RemotePins",
    "handle_failure",
    "prepare_audio",
]

log = logging.getLogger(__name__)


class IpfsUnavailable(RetryablePublisherError, UnavailableError):
    code = "ipfs_unavailable"


class KafkaUnavailable(RetryablePublisherError, UnavailableError):
    code = "kafka_unavailable"


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
    cancels: CancelView | None = None


@dataclass(frozen=True)
class Pinned:
    """A file ready to register: pinned with its manifest, remote pins asked."""

    ready: AudioReady
    provenance: Provenance
    remote_pins: dict[str, str]

    def item(self) -> TrackItem:
        ready = self.ready
        offchain_id = ready.offchain_id if ready.source == "http" else None
        return TrackItem(
            ready.request_id, Track(ready.audio_hash, ready.cid), self.provenance, offchain_id
        )


async def prepare_audio(record: InRecord, deps: Deps) -> Pinned | list[OutRecord]:
    """Steps 1-3 of an audio record: its file pinned, or nothing to publish."""
    if record.header(TYPE_HEADER) == b"AudioChunk":
        return []  # read when the request's AudioReady arrives
    ready = decode_value(AudioReady, record)
    if record.request_id != ready.request_id:
        raise InvalidRecordError(f"AudioReady for {ready.request_id} under key {record.key!r}")

    # 1. Still a request? A chain request a reorg removed is not published once its absence
    #    is final (the listener revokes it; if it comes back later, it is generated again);
    #    until then it is tried again, since the reorg may only have moved it.
    if not await _still_requested(deps, ready):
        return []
    if (stop := why_stop(deps.cancels, ready.request_id, ready.deadline)) is not None:
        return [_canceled(deps, ready, stop, "stopped before publishing")]

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
    return Pinned(ready, provenance, remote_pins)


class AudioBatches:
    """`acesteps.kafka.pipelined.BatchHandler` of the audio topic (steps 1-5)."""

    async def prepare(self, record: InRecord, deps: Deps) -> Pinned | list[OutRecord]:
        return await prepare_audio(record, deps)

    async def submit(self, items: Sequence[Pinned], deps: Deps) -> Finish:
        # 4. Whatever was canceled until now stops here; the rest is registered in one
        #    transaction, broadcast (not mined) when this returns.
        stops = await _stops(deps, items)
        kept = [pinned for pinned in items if pinned.ready.request_id not in stops]
        finish = None
        if kept:
            async with _chain_errors("registering"):
                finish = await submit_batch(
                    deps.registry,
                    deps.sender,
                    [pinned.item() for pinned in kept],
                    deps.confirmations,
                    from_block=deps.from_block,
                )

        async def published() -> list[Sequence[OutRecord] | Exception]:
            outcomes: list[Outcome] = []
            if finish is not None:
                async with _chain_errors("registering"):
                    outcomes = list(await finish())
            registered = iter(zip(kept, outcomes, strict=True))
            # 5. Announced, in the transaction that consumes the AudioReady records.
            results: list[Sequence[OutRecord] | Exception] = []
            for pinned in items:
                stop = stops.get(pinned.ready.request_id)
                if stop is not None:
                    results.append(
                        [_canceled(deps, pinned.ready, stop, "stopped before registering")]
                    )
                else:
                    results.append(await _announce(deps, *next(registered)))
            return results

        return published


async def _stops(deps: Deps, items: Sequence[Pinned]) -> dict[str, Stop]:
    """The items that must stop, after reading every cancel Kafka acknowledged until now."""
    if deps.cancels is not None:
        try:
            await deps.cancels.caught_up()
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailable(f"reading the cancels before registering: {exc!r}") from exc
    stops = {}
    for pinned in items:
        ready = pinned.ready
        if (stop := why_stop(deps.cancels, ready.request_id, ready.deadline)) is not None:
            stops[ready.request_id] = stop
    return stops


def _canceled(deps: Deps, ready: AudioReady, stop: Stop, when: str) -> OutRecord:
    log.info("request %s: %s; %s", ready.request_id, stop.message, when)
    canceled = stop.record(ready, ready.request_id, "publisher", when)
    return OutRecord.message(deps.topics.failures, ready.request_id, canceled)


async def _announce(deps: Deps, pinned: Pinned, outcome: Outcome) -> list[OutRecord] | Exception:
    if isinstance(outcome, Registration):
        return [_published(deps, pinned, outcome)]
    try:
        # Removed by a reorg between step 1 and the registration: not published, as in step 1.
        if isinstance(outcome, ContractReverted) and outcome.error_name == "NotPending":
            async with _chain_errors("reading the request"):
                if not await _still_requested(deps, pinned.ready):
                    return []
                status = await deps.registry.status(pinned.ready.request_id)
            if status is RequestStatus.CANCELED:  # before the listener said so
                stop = Stop("chain", "canceled on chain by its requester")
                return [_canceled(deps, pinned.ready, stop, "refused by the contract")]
    except Exception as exc:
        return exc
    return outcome


def _published(deps: Deps, pinned: Pinned, reg: Registration) -> OutRecord:
    ready = pinned.ready
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
        model=ready.model,
        weights_digest=ready.manifest.model.weights_digest if ready.manifest else None,
        adapter_digest=_adapter_digest(ready),
        remote_pins=pinned.remote_pins,
    )
    return OutRecord.message(deps.topics.tracks, ready.request_id, track)


def _adapter_digest(ready: AudioReady) -> str | None:
    """The digest of the LoRA adapter the track ran with (its manifest's), else None."""
    adapter = ready.manifest.adapter if ready.manifest else None
    return adapter.digest if adapter else None


async def _still_requested(deps: Deps, ready: AudioReady) -> bool:
    """False for a chain request that is not on this chain (any more): a reorg removed it.

    HTTP requests always are. A chain request is when the contract has it (pending, or
    registered or failed already: registration sorts those out). When it has not, the node
    may only be behind the listener's: then retry until it has the request's block; or a
    reorg may only have moved the request: then retry until it is back, or until its block
    would be final (`publisher.finality.absence_final`), when its absence is final too.
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
    async with _chain_errors("reading the request's block"):
        gone = await absence_final(deps.finality, ready.chain)
    if not gone:
        raise RequestAbsent(
            f"request {ready.request_id} is not on chain now (a reorg?), and its block "
            f"{ready.chain.block_number if ready.chain else '?'} is not final yet: it may come back"
        )
    log.warning(
        "request %s is not on chain (its block %s was reorged out): not publishing it",
        ready.request_id,
        ready.chain.block_hash if ready.chain else "?",
    )
    return False


async def handle_failure(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    if record.header(TYPE_HEADER) == GenerationCanceled.__name__.encode():
        return []  # nothing to refund or mark: see the module's docstring
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
