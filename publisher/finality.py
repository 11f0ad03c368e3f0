"""Following registrations and refunds until they are final, through reorgs.

`handle_track` reads ``PREFIX.tracks.v1`` (its own consumer group) and writes
``PREFIX.tracks.v1``. For each `TrackPublished` it reads where the registration stands:

1. mined, and its block final (`acesteps.finality.Finality`): a `TrackFinalized`;
2. mined or pending, not final yet: `NotFinalYet` after a short wait; the consume loop
   tries the record again after a back-off, for as long as it takes (the chain is
   not down, it is only slow), never dead-lettering it;
3. dropped by a reorg: the chain is read again. Registered by another transaction: a
   `RegistrationReorged` for this one and a `TrackPublished` for that one. Not registered
   and still requested (a pending chain request, or any HTTP request): registered again
   (`publisher.registrar.register`), then the same two records. A chain request that is no
   longer pending (it vanished with the reorg, or failed): a `RegistrationReorged` alone;
   one the contract does not hold is gone only once the block it was requested in would be
   final (`absence_final`): until then the reorg may only have moved it, and the record is
   tried again.

Each new `TrackPublished` is read back by this loop and followed in turn; the records it
writes itself (`TrackFinalized`, `RegistrationReorged`) are skipped. A crash before the
commit repeats the check, never its outcome: registration reads the chain first.

`wait_final` does the same for a refund: `publisher.handlers.handle_failure` waits until the
``markFailed`` that failed a request is final, and sends it again if a reorg dropped it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from acesteps.errors import UnavailableError
from acesteps.finality import Finality, Mined, tx_state
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import TYPE_HEADER, RegistrationReorged, TrackFinalized, TrackPublished
from acesteps.origin import ChainOrigin
from acesteps.registry import LogRef, Provenance, Registry, RequestStatus, Track
from publisher.errors import ConflictingRegistration, RetryablePublisherError, TxDropped
from publisher.registrar import Registration, register
from publisher.txsender import TxSender

__all__ = [
    "FinalityDeps",
    "NotFinalYet",
    "RequestAbsent",
    "absence_final",
    "handle_track",
    "wait_final",
]

log = logging.getLogger(__name__)


class NotFinalYet(RetryablePublisherError, UnavailableError):
    """The transaction is not final yet: try the record again later, for as long as it takes."""

    code = "not_final_yet"


class RequestAbsent(NotFinalYet):
    """A chain request the contract does not hold now, requested in a block that is not final
    yet: a reorg may only have moved it. Tried again until it is back or its absence is final."""

    code = "request_absent"


@dataclass(frozen=True)
class FinalityDeps:
    registry: Registry
    sender: TxSender
    finality: Finality
    topic: str
    confirmations: int
    from_block: int
    wait_s: float = 20.0
    poll_s: float = 1.0


async def wait_final(
    deps: FinalityDeps, what: str, find: Callable[[], Awaitable[LogRef | None]]
) -> Mined | None:
    """Wait (up to ``deps.wait_s``) until the transaction that ``find`` names is final.

    None when ``find`` names none (nothing to wait for); raises `NotFinalYet` when it is not
    final yet, and `publisher.errors.TxDropped` when a reorg dropped it (the retry reads the
    chain again and sends what is still needed).
    """
    deadline = asyncio.get_running_loop().time() + deps.wait_s
    while True:
        ref = await find()
        if ref is None:
            return None
        state = await tx_state(deps.registry.w3, ref.tx_hash)
        if state == "dropped":
            raise TxDropped(f"{what}: {ref.tx_hash} was dropped by a reorg", (ref.tx_hash,))
        if isinstance(state, Mined) and await _final(deps, state):
            return state
        if asyncio.get_running_loop().time() >= deadline:
            raise NotFinalYet(f"{what}: {ref.tx_hash} is not final yet ({state_text(state)})")
        await asyncio.sleep(deps.poll_s)


async def absence_final(deps: FinalityDeps, origin: ChainOrigin | None) -> bool:
    """Whether a chain request that the contract does not hold now is gone for good.

    Only once the block it was requested in would be final: before that, a reorg may only
    have moved it (its transaction re-included a few blocks later). The listener does not
    announce a request again when its rescan finds it re-included, so whoever drops one
    earlier loses its registration for good.
    """
    if origin is None:
        return True
    w3 = deps.registry.w3
    head = int(await w3.eth.block_number)
    return await deps.finality.is_final(w3, origin.block_number, head - origin.block_number + 1)


async def handle_track(record: InRecord, deps: FinalityDeps) -> Sequence[OutRecord]:
    if record.header(TYPE_HEADER) != b"TrackPublished":
        return []  # what this loop writes itself
    track = decode_value(TrackPublished, record)
    deadline = asyncio.get_running_loop().time() + deps.wait_s
    while True:
        state = await tx_state(deps.registry.w3, track.tx_hash)
        if state == "dropped" or (isinstance(state, Mined) and state.status != 1):
            return await _reregister(deps, track)
        if isinstance(state, Mined) and await _final(deps, state):
            return [_out(deps, _finalized(deps, track, state))]
        if asyncio.get_running_loop().time() >= deadline:
            raise NotFinalYet(
                f"registration of {track.request_id} in {track.tx_hash}: {state_text(state)}"
            )
        await asyncio.sleep(deps.poll_s)


async def _final(deps: FinalityDeps, state: Mined) -> bool:
    return await deps.finality.is_final(deps.registry.w3, state.block_number, state.confirmations)


def state_text(state: Any) -> str:
    if isinstance(state, Mined):
        return f"{state.confirmations} confirmation(s), block {state.block_number}"
    return str(state)


async def _reregister(deps: FinalityDeps, track: TrackPublished) -> list[OutRecord]:
    """The registration in ``track.tx_hash`` is gone: what the chain holds now, and what to do."""
    rid, registry = track.request_id, deps.registry
    wanted = Track(track.audio_hash, track.cid)
    current = await registry.track_of(rid)
    if current is not None and current != wanted:
        raise ConflictingRegistration(f"request {rid} is registered with {current}, not {wanted}")
    if current is None and track.source != "http":
        status = await registry.status(rid)
        if status is RequestStatus.NONE and not await absence_final(deps, track.chain):
            raise RequestAbsent(
                f"registration of {rid} in {track.tx_hash} reorged out, and the request is not "
                "on chain now; its block is not final yet, so it may come back"
            )
        if status is not RequestStatus.PENDING:
            reason = f"its request is {status.name.lower()} on chain: not registered again"
            log.warning("request %s: registration %s reorged out; %s", rid, track.tx_hash, reason)
            return [_out(deps, _reorged(track, reason))]
    if track.manifest_hash is None or track.manifest_cid is None:
        reason = "published without a manifest (an older publisher): not registered again"
        return [_out(deps, _reorged(track, reason))]
    reg = await register(
        registry,
        deps.sender,
        rid,
        wanted,
        Provenance(track.manifest_hash, track.manifest_cid),
        deps.confirmations,
        offchain_id=track.offchain_id if track.source == "http" else None,
        from_block=deps.from_block,
    )
    reason = f"registered again in {reg.tx_hash}"
    log.warning("request %s: registration %s reorged out; %s", rid, track.tx_hash, reason)
    return [_out(deps, _reorged(track, reason)), _out(deps, _republished(track, reg))]


def _out(
    deps: FinalityDeps, message: TrackFinalized | RegistrationReorged | TrackPublished
) -> OutRecord:
    return OutRecord.message(deps.topic, message.request_id, message)


def _registered_fields(track: TrackPublished) -> dict[str, Any]:
    return {
        name: getattr(track, name)
        for name in ("request_id", "audio_hash", "cid", "chain_id", "contract", "tx_hash")
    } | {"block_number": track.block_number, "block_hash": track.block_hash}


def _finalized(deps: FinalityDeps, track: TrackPublished, state: Mined) -> TrackFinalized:
    # The block it is final in: a reorg may have moved the transaction since it was published.
    fields = _registered_fields(track)
    fields.update(block_number=state.block_number, block_hash=state.block_hash)
    return TrackFinalized(
        **fields, confirmations=state.confirmations, finality=deps.finality.describe()
    )


def _reorged(track: TrackPublished, reason: str) -> RegistrationReorged:
    return RegistrationReorged(**_registered_fields(track), reason=reason)


def _republished(track: TrackPublished, reg: Registration) -> TrackPublished:
    return track.model_copy(
        update={
            "tx_hash": reg.tx_hash,
            "block_number": reg.block_number,
            "block_hash": reg.block_hash,
            "confirmations": reg.confirmations,
            "manifest_hash": reg.provenance.manifest_hash,
            "manifest_cid": reg.provenance.manifest_cid,
        }
    )
