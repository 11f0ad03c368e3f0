"""Registering a published track on ``AceStepsRegistry``, idempotently (design §5, §6).

The publisher may crash after its ``registerTrack`` was mined but before its Kafka
transaction committed, and two instances may race for one request after a rebalance. So
registration reads the chain first, and the contract's own refusal (``AlreadyRegistered``)
sends it back to reading:

1. ``trackOf(requestId)`` holds this (audioHash, CID): done already; the transaction and
   block come from the ``TrackRegistered`` log (``requestId`` is indexed).
2. It holds another track: `ConflictingRegistration`, permanent, logged at ERROR: the
   service's own record of the request disagrees with the chain and a person must look.
3. It holds nothing: send ``registerTrack``. If that reverts with ``AlreadyRegistered``,
   someone got there between the read and the send: go back to 1.

``markFailed`` only applies to pending on-chain requests; anything else (already failed,
registered, or an HTTP id the contract never saw) is skipped without a transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum

from web3.contract import AsyncContract

from publisher.errors import (
    ConflictingRegistration,
    ContractReverted,
    RetryablePublisherError,
)
from publisher.txsender import TxSender
from publisher.txtypes import SentTx

__all__ = ["Registration", "RequestStatus", "mark_failed", "register", "request_status"]

log = logging.getLogger(__name__)
_ZERO = b"\x00" * 32


class RequestStatus(IntEnum):
    """``AceStepsRegistry.Status``."""

    NONE = 0
    PENDING = 1
    REGISTERED = 2
    FAILED = 3


@dataclass(frozen=True)
class Registration:
    request_id: str
    audio_hash: str
    cid: str
    tx_hash: str
    block_number: int
    already: bool = False
    """True when the track was found registered and no transaction was sent."""


async def register(
    contract: AsyncContract,
    sender: TxSender,
    request_id: str | bytes,
    audio_hash: str | bytes,
    cid: str,
    confirmations: int,
    *,
    from_block: int = 0,
) -> Registration:
    """Make sure ``request_id`` is registered with exactly (``audio_hash``, ``cid``).

    ``from_block`` (the deployment block, when known) bounds the log search of step 1.
    """
    rid, digest = _bytes32(request_id), _bytes32(audio_hash)
    found = await _registered(contract, sender, rid, digest, cid, confirmations, from_block)
    if found is not None:
        return found
    try:
        sent = await sender.send(
            contract.functions.registerTrack(rid, digest, cid), confirmations=confirmations
        )
    except ContractReverted as exc:
        if exc.error_name != "AlreadyRegistered":
            raise
        log.info("request %s: registered concurrently; reading it back", _hex(rid))
        found = await _registered(contract, sender, rid, digest, cid, confirmations, from_block)
        if found is None:  # the chain said registered and now says not: a reorg, or a lagging node
            raise RetryablePublisherError(
                f"request {_hex(rid)}: AlreadyRegistered, yet trackOf is empty"
            ) from None
        return found
    log.info("request %s: registered in %s (block %d)", _hex(rid), sent.tx_hash, sent.block_number)
    return Registration(_hex(rid), _hex(digest), cid, sent.tx_hash, sent.block_number)


async def mark_failed(
    contract: AsyncContract,
    sender: TxSender,
    request_id: str | bytes,
    reason: str,
    confirmations: int,
) -> SentTx | None:
    """Mark a pending on-chain request failed (refunding its fee); None when skipped."""
    rid = _bytes32(request_id)
    status = await request_status(contract, rid)
    if status != RequestStatus.PENDING:
        log.info(
            "request %s: not pending on chain (%s); not marking it failed", _hex(rid), status.name
        )
        return None
    try:
        sent = await sender.send(
            contract.functions.markFailed(rid, reason), confirmations=confirmations
        )
    except ContractReverted as exc:
        if exc.error_name != "NotPending":
            raise
        log.info("request %s: stopped being pending before markFailed", _hex(rid))
        return None
    log.info("request %s: marked failed in %s", _hex(rid), sent.tx_hash)
    return sent


async def request_status(contract: AsyncContract, request_id: str | bytes) -> RequestStatus:
    """The on-chain status of a request (`RequestStatus.NONE` for ids never requested)."""
    call = contract.functions.requests(_bytes32(request_id))
    values = await call.call()
    # By name: the getter's field order follows the struct's, which may be repacked.
    names = [output["name"] for output in call.abi["outputs"]]
    return RequestStatus(values[names.index("status")])


async def _registered(
    contract: AsyncContract,
    sender: TxSender,
    rid: bytes,
    digest: bytes,
    cid: str,
    confirmations: int,
    from_block: int,
) -> Registration | None:
    """The existing registration if it is this track; None if there is none; else raise."""
    on_hash, on_cid = await contract.functions.trackOf(rid).call()
    if bytes(on_hash) == _ZERO:
        return None
    if (bytes(on_hash), on_cid) != (digest, cid):
        log.error(
            "CONFLICTING REGISTRATION of request %s: the chain holds audioHash=%s cid=%s, "
            "the publisher has audioHash=%s cid=%s",
            _hex(rid),
            _hex(bytes(on_hash)),
            on_cid,
            _hex(digest),
            cid,
        )
        raise ConflictingRegistration(
            f"request {_hex(rid)} is registered with audioHash {_hex(bytes(on_hash))} "
            f"cid {on_cid}, not audioHash {_hex(digest)} cid {cid}"
        )
    tx_hash = await _registration_tx(contract, rid, from_block)
    # A crash may have come before the confirmations did: wait for them now.
    sent = await sender.wait_for_confirmations(tx_hash, confirmations)
    log.info("request %s: already registered in %s", _hex(rid), sent.tx_hash)
    return Registration(_hex(rid), _hex(digest), cid, sent.tx_hash, sent.block_number, True)


async def _registration_tx(contract: AsyncContract, rid: bytes, from_block: int) -> str:
    """The hash of the transaction that registered ``rid``, from its TrackRegistered log."""
    logs = await contract.events.TrackRegistered().get_logs(
        argument_filters={"requestId": rid}, from_block=from_block, to_block="latest"
    )
    for entry in logs:  # at most one: the contract registers an id once
        return _hex(bytes(entry["transactionHash"]))
    # trackOf answered from a node (or block) that getLogs did not see yet
    raise RetryablePublisherError(f"request {_hex(rid)}: registered, but no TrackRegistered log")


def _bytes32(value: str | bytes) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()
