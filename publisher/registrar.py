"""Registering a published track on ``AceStepsRegistry``, idempotently.

The publisher may crash after its ``registerTrack`` was mined but before its Kafka
transaction committed, and two instances may race for one request after a rebalance. So
registration reads the chain first, and the contract's own refusal (``AlreadyRegistered``)
sends it back to reading:

1. ``trackOf(requestId)`` holds this (audioHash, CID): done already; the transaction and
   block come from the ``TrackRegistered`` log (``requestId`` is indexed).
2. It holds another track: `ConflictingRegistration`, permanent, logged at ERROR: the
   service's own record of the request disagrees with the chain and a person must look.
3. It holds nothing: send ``registerTrack`` (a chain request: the contract refuses it unless
   the request is pending on this chain, so a request a reorg removed is never registered)
   or ``registerOffchainTrack`` (an HTTP request, by its off-chain id). If that reverts with
   ``AlreadyRegistered``, someone got there between the read and the send: go back to 1.

Step 1 and the wait for confirmations follow reorgs: a registration that a reorg dropped
raises `publisher.errors.TxDropped` (retryable), and the retry starts again at step 1.

`submit_batch` does the same for many tracks with one ``registerTracks`` transaction: each
item's state is read first (registered with this track: nothing to send; with another:
`ConflictingRegistration` for that item), the rest go in one call, which returns once it is
broadcast; the coroutine it returns waits for the confirmations and gives each item its
`Registration` or its error. An item the contract skipped (``TrackSkipped``) because it was
registered meanwhile is read back as in step 3; any other skip is a `ContractReverted` of
that item with the contract's reason (``NotPending``, ``ZeroHash``, ``BadCid``), except
``CallbackOverBudget`` (the batch's callbacks had used their gas): `CallbackDeferred`,
retried until a later transaction registers it.

``markFailed`` only applies to pending on-chain requests; anything else (already failed,
registered, or an HTTP id the contract never saw) is skipped without a transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from acesteps.registry import (
    Provenance,
    Registry,
    RequestStatus,
    Track,
    TrackItem,
    offchain_request_id,
)
from acesteps.types import to_hex
from publisher.errors import (
    CallbackDeferred,
    ConflictingRegistration,
    ContractReverted,
    PermanentPublisherError,
    RetryablePublisherError,
)
from publisher.reasons import fit_reason
from publisher.txsender import PendingTx, TxSender
from publisher.txtypes import SentTx

__all__ = ["Outcome", "Registration", "mark_failed", "register", "submit_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    request_id: str
    track: Track
    provenance: Provenance
    """The manifest registered with the track (the first one, if it was registered before)."""
    tx_hash: str
    block_number: int
    block_hash: str
    confirmations: int
    already: bool = False
    """True when the track was found registered and no transaction was sent."""

    @classmethod
    def of(
        cls, request_id: str, track: Track, provenance: Provenance, sent: SentTx, **kw: bool
    ) -> Registration:
        return cls(
            request_id,
            track,
            provenance,
            sent.tx_hash,
            sent.block_number,
            sent.block_hash,
            sent.confirmations,
            **kw,
        )


async def register(
    registry: Registry,
    sender: TxSender,
    request_id: str | bytes,
    track: Track,
    provenance: Provenance,
    confirmations: int,
    *,
    offchain_id: str | None = None,
    from_block: int = 0,
) -> Registration:
    """Make sure ``request_id`` is registered with exactly ``track`` (its audioHash and CID),
    with ``provenance`` (the manifest) when this call registers it.

    A chain request goes through ``registerTrack`` (the contract accepts it only while the
    request is pending); an HTTP request, given its ``offchain_id``, through
    ``registerOffchainTrack``, whose id must be ``request_id``. ``from_block`` (the
    deployment block, when known) bounds the log search of step 1.
    """
    request_id = to_hex(request_id)
    wanted = Track(to_hex(track.audio_hash), track.cid)
    found = await _registered(registry, sender, request_id, wanted, confirmations, from_block)
    if found is not None:
        return found
    if offchain_id is None:
        call = registry.register_track(request_id, wanted, provenance)
    else:
        _check_offchain(await registry.chain_id(), registry.address, request_id, offchain_id)
        call = registry.register_offchain_track(offchain_id, wanted, provenance)
    try:
        sent = await sender.send(call, confirmations=confirmations)
    except ContractReverted as exc:
        if exc.error_name != "AlreadyRegistered":
            raise
        log.info("request %s: registered concurrently; reading it back", request_id)
        found = await _registered(registry, sender, request_id, wanted, confirmations, from_block)
        if found is None:  # the chain said registered and now says not: a reorg, or a lagging node
            raise RetryablePublisherError(
                f"request {request_id}: AlreadyRegistered, yet trackOf is empty"
            ) from None
        return found
    log.info("request %s: registered in %s (block %d)", request_id, sent.tx_hash, sent.block_number)
    return Registration.of(request_id, wanted, provenance, sent)


Outcome = Registration | Exception
"""An item's outcome in a batch: its registration, or why it has none."""


async def submit_batch(
    registry: Registry,
    sender: TxSender,
    items: Sequence[TrackItem],
    confirmations: int,
    *,
    from_block: int = 0,
) -> Callable[[], Awaitable[list[Outcome]]]:
    """Send one ``registerTracks`` for the ``items`` not registered yet; the coroutine
    function that waits for it and returns each item's outcome, in order."""
    chain_id = await registry.chain_id()
    states = await asyncio.gather(
        *(_state(registry, chain_id, item) for item in items), return_exceptions=True
    )
    todo = [item for item, state in zip(items, states, strict=True) if state is None]
    pending: PendingTx | None = None
    if todo:
        pending = await sender.submit(registry.register_tracks(todo))
        log.info("registering %d track(s) in %s", len(todo), pending.tx_hash)

    async def finish() -> list[Outcome]:
        sent = await pending.wait(confirmations) if pending is not None else None
        skipped = registry.skipped(sent.receipt) if sent is not None else {}
        outcomes: list[Outcome] = []
        for item, state in zip(items, states, strict=True):
            try:
                outcomes.append(
                    await _outcome(
                        registry, sender, item, state, sent, skipped, confirmations, from_block
                    )
                )
            except Exception as exc:  # one item's trouble is that item's outcome
                outcomes.append(exc)
        return outcomes

    return finish


async def _state(registry: Registry, chain_id: int, item: TrackItem) -> Track | None:
    """What the chain holds for ``item``: None (send it), or its very track (nothing to send);
    raises for another track, or an off-chain id that is not the request's."""
    if item.offchain_id is not None:
        _check_offchain(chain_id, registry.address, item.request_id, item.offchain_id)
    found = await registry.track_of(item.request_id)
    if found is not None and found != _wanted(item):
        _conflict(item.request_id, found, _wanted(item))
    return found


async def _outcome(
    registry: Registry,
    sender: TxSender,
    item: TrackItem,
    state: Track | BaseException | None,
    sent: SentTx | None,
    skipped: dict[str, str],
    confirmations: int,
    from_block: int,
) -> Registration:
    if isinstance(state, BaseException):
        raise state
    reason = skipped.get(item.request_id)
    if state is not None or reason == "AlreadyRegistered":
        found = await _registered(
            registry, sender, item.request_id, _wanted(item), confirmations, from_block
        )
        if found is None:  # skipped as registered, and now it is not: a reorg, or a lagging node
            raise RetryablePublisherError(
                f"request {item.request_id}: AlreadyRegistered, yet trackOf is empty"
            )
        return found
    assert sent is not None  # the item was sent
    if reason == "CallbackOverBudget":
        raise CallbackDeferred(
            f"request {item.request_id}: its callback did not fit in {sent.tx_hash}; "
            "registering it in a later transaction"
        )
    if reason is not None:
        raise ContractReverted("registerTracks", reason, (item.request_id,), sent.tx_hash)
    log.info(
        "request %s: registered in %s (block %d)", item.request_id, sent.tx_hash, sent.block_number
    )
    return Registration.of(item.request_id, _wanted(item), item.provenance, sent)


def _wanted(item: TrackItem) -> Track:
    return Track(to_hex(item.track.audio_hash), item.track.cid)


async def mark_failed(
    registry: Registry,
    sender: TxSender,
    request_id: str | bytes,
    reason: str,
    confirmations: int,
) -> SentTx | None:
    """Mark a pending on-chain request failed (refunding its fee); None when skipped. The
    ``reason`` sent is cut to what the contract keeps (`publisher.reasons.fit_reason`)."""
    request_id = to_hex(request_id)
    status = await registry.status(request_id)
    if status != RequestStatus.PENDING:
        log.info(
            "request %s: not pending on chain (%s); not marking it failed", request_id, status.name
        )
        return None
    try:
        sent = await sender.send(
            registry.mark_failed(request_id, fit_reason(reason)), confirmations=confirmations
        )
    except ContractReverted as exc:
        if exc.error_name != "NotPending":
            raise
        log.info("request %s: stopped being pending before markFailed", request_id)
        return None
    log.info("request %s: marked failed in %s", request_id, sent.tx_hash)
    return sent


async def _registered(
    registry: Registry,
    sender: TxSender,
    request_id: str,
    wanted: Track,
    confirmations: int,
    from_block: int,
) -> Registration | None:
    """The existing registration if it is this track; None if there is none; else raise."""
    track = await registry.track_of(request_id)
    if track is None:
        return None
    if track != wanted:
        _conflict(request_id, track, wanted)
    found = await registry.registration(request_id, from_block)
    if found is None:  # trackOf answered from a node (or block) that getLogs did not see yet
        raise RetryablePublisherError(
            f"request {request_id}: registered, but no TrackRegistered log"
        )
    # A crash may have come before the confirmations did: wait for them now.
    sent = await sender.wait_for_confirmations(found.tx_hash, confirmations)
    log.info("request %s: already registered in %s", request_id, sent.tx_hash)
    provenance = await registry.provenance_of(request_id)
    if provenance is None:  # as for the log: the node answered from an older block
        raise RetryablePublisherError(f"request {request_id}: registered, but no provenance")
    return Registration.of(request_id, wanted, provenance, sent, already=True)


def _check_offchain(chain_id: int, contract: str, request_id: str, offchain_id: str) -> None:
    derived = offchain_request_id(chain_id, contract, offchain_id)
    if derived != request_id:
        raise PermanentPublisherError(
            f"request {request_id} is not the off-chain id {offchain_id}'s ({derived})"
        )


def _conflict(request_id: str, track: Track, wanted: Track) -> None:
    log.error(
        "CONFLICTING REGISTRATION of request %s: the chain holds audioHash=%s cid=%s, "
        "the publisher has audioHash=%s cid=%s",
        request_id,
        track.audio_hash,
        track.cid,
        wanted.audio_hash,
        wanted.cid,
    )
    raise ConflictingRegistration(
        f"request {request_id} is registered with audioHash {track.audio_hash} "
        f"cid {track.cid}, not audioHash {wanted.audio_hash} cid {wanted.cid}"
    )
