"""Sending contract transactions from one local signer, as a long-running service must.

One `TxSender` per publisher instance and per key: nothing else may send from
that key while the instance runs, except by mistake, which the sender survives.

1. **Gas.** Every call is estimated first (with a margin); a revert on estimation is a
   permanent `ContractReverted` carrying the custom error's name, decoded against the
   ABI's error selectors, and nothing is sent.
2. **Nonces** are assigned locally under an `asyncio.Lock`, starting from the node's
   ``pending`` count, so concurrent sends pipeline instead of racing for the same nonce.
   A nonce error ("nonce too low/high", "replacement transaction underpriced") means
   someone else used the key or the node lost a transaction: re-sync from the node, retry.
   "already known" means the node holds this very transaction (same hash): success.
3. **Fees** are EIP-1559: the node's ``eth_maxPriorityFeePerGas`` plus twice the latest
   base fee, which survives six full blocks of base-fee growth; ``max_fee_cap_wei`` caps it.
4. **Receipts.** The sender polls the receipts of *every* hash it sent for the call, because
   any one of the original and its replacements may be the one mined, then polls the block
   number until the receipt has N confirmations.
5. **Replacement.** A transaction still pending after ``pending_timeout_s`` is re-signed
   with the same nonce and both fee fields raised by at least 12.5% (nodes require 10%),
   up to ``max_replacements`` times and never above the cap. If a transaction that is not
   ours took the nonce, the call is re-estimated and sent again with a new nonce.

6. **Reorgs.** A transaction that a reorg dropped after it was mined raises `TxDropped` at
   once (the caller reads the chain again); the nonce re-syncs before a send when the node
   counts fewer of ours than we sent; a transaction dropped from the node's pool is
   re-broadcast as signed; one queued behind nonces that nothing holds any more gets them
   filled with no-ops.

The sender never lets web3 retry ``eth_sendRawTransaction`` (`publisher.provider`): it retries
broadcasts itself.

The private key lives only in the `LocalAccount`; logs, reprs and errors show the address.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any, Final

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import Nonce, TxParams, TxReceipt, Wei

from acesteps.reverts import decode_revert
from publisher.errors import (
    ChainUnavailable,
    ContractReverted,
    RetryablePublisherError,
    TxDropped,
    TxNotMined,
)
from publisher.provider import no_send_retries
from publisher.txtypes import (
    _KNOWN,
    _NONCE,
    Fees,
    SentTx,
    TxPolicy,
    _classify,
    _describe,
    _hex,
    _InFlight,
    _NonceRefused,
    _NonceTaken,
    _now,
    _rpc_message,
)

__all__ = ["PendingTx", "TxSender"]

log = logging.getLogger(__name__)

GAP_GRACE_S: Final = 3.0
"""How long a gap below a waiting transaction may last before the sender fills it."""
_TRANSIENT: Final = (aiohttp.ClientError, TimeoutError, ProviderConnectionError)


class TxSender:
    """Signs and sends contract calls from one key; see the module docstring."""

    def __init__(self, w3: AsyncWeb3[Any], private_key: str, policy: TxPolicy | None = None):
        no_send_retries(w3)
        self._w3 = w3
        try:
            self._account: LocalAccount = Account.from_key(private_key)
        except Exception:  # whatever the library says, it must not quote the key
            raise ValueError("the signing key is not a valid secp256k1 private key") from None
        self.address: str = self._account.address
        self.policy = policy or TxPolicy()
        self._lock = asyncio.Lock()
        self._next_nonce: int | None = None  # None: read the node's pending count first
        self._chain_id: int | None = None

    def __repr__(self) -> str:
        return f"TxSender(address={self.address})"

    async def send(
        self, fn: AsyncContractFunction, *, confirmations: int, value: int = 0
    ) -> SentTx:
        """Estimate, sign, send and wait until the call is mined with ``confirmations``.

        Raises `ContractReverted` (permanent) when the call reverts, on estimation or
        mined; `TxNotMined`, `ChainUnavailable`, `InsufficientFunds` (retryable).
        """
        _check_confirmations(confirmations)
        return await (await self.submit(fn, value=value)).wait(confirmations)

    async def submit(self, fn: AsyncContractFunction, *, value: int = 0) -> PendingTx:
        """Estimate, sign and broadcast the call; returns as soon as the node took it.

        Several submitted calls are in flight at once with consecutive nonces; each
        `PendingTx.wait` follows its own. Raises what `send` raises before the broadcast.
        """
        deadline = _now() + self.policy.deadline_s
        tx = await self._prepare(fn, value)
        flight = await self._broadcast_new(tx, fn.fn_name)
        return PendingTx(self, fn, value, flight, deadline)

    async def wait_for_confirmations(
        self, tx_hash: str, confirmations: int, deadline: float | None = None
    ) -> SentTx:
        """Poll until ``tx_hash`` is mined ``confirmations`` deep (1: in the head block).

        The receipt is read again on every poll, so a reorg that moves the transaction to
        another block is followed, not missed. A transaction that a reorg dropped (no receipt,
        and the node no longer knows it) raises `TxDropped` at once, and the next send
        re-reads the nonce: waiting would only stall every later transaction.
        """
        deadline = deadline if deadline is not None else _now() + self.policy.deadline_s
        while True:
            try:
                head = await self._w3.eth.block_number
                receipt = await self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                confirmed = head - int(receipt["blockNumber"]) + 1
                if confirmed >= confirmations:
                    return replace(SentTx.of(receipt), confirmations=confirmed)
            except TransactionNotFound:
                if not await self._known(tx_hash):
                    self._next_nonce = None
                    raise TxDropped(f"{tx_hash} was dropped (a reorg?)", (tx_hash,)) from None
                log.warning("transaction %s is pending again (reorged out?); waiting", tx_hash)
            except _TRANSIENT as exc:
                log.warning("waiting for confirmations of %s: %s", tx_hash, _describe(exc))
            if _now() >= deadline:
                raise TxNotMined(
                    f"{tx_hash} did not reach {confirmations} confirmations in time", (tx_hash,)
                )
            await asyncio.sleep(self.policy.poll_interval_s)

    # ------------------------------------------------------------------ 1. gas

    async def _prepare(self, fn: AsyncContractFunction, value: int) -> TxParams:
        try:
            estimate = await fn.estimate_gas({"from": self.address, "value": Wei(value)})
            self._chain_id = self._chain_id or await self._w3.eth.chain_id
            gas = int(estimate * self.policy.gas_margin)
            # Placeholders for the fields set per signature; given, they stop web3 from
            # asking the node for them.
            params: TxParams = {
                "from": self.address,
                "value": Wei(value),
                "gas": gas,
                "nonce": Nonce(0),
                "maxFeePerGas": Wei(1),
                "maxPriorityFeePerGas": Wei(1),
                "chainId": self._chain_id,
            }
            return await fn.build_transaction(params)
        except ContractLogicError as exc:
            name, args = decode_revert(fn.contract_abi, exc.data)
            raise ContractReverted(fn.fn_name, name, args) from None
        except Web3RPCError as exc:
            raise _classify(exc, f"estimating {fn.fn_name}") from None
        except _TRANSIENT as exc:
            raise ChainUnavailable(f"estimating {fn.fn_name}: {_describe(exc)}") from None

    async def _replay_revert(
        self, fn: AsyncContractFunction, value: int, block: int
    ) -> tuple[str, tuple[object, ...]]:
        """Why a mined transaction failed: its call replayed on the state of its block.

        A call that succeeds on replay most likely ran out of gas (or depended on the order
        of transactions within the block): reported as ``unknown``.
        """
        try:
            await fn.call({"from": self.address, "value": Wei(value)}, block_identifier=block)
        except ContractLogicError as exc:
            return decode_revert(fn.contract_abi, exc.data)
        except (Web3RPCError, *_TRANSIENT):
            pass
        return "unknown", ()

    # ------------------------------------------------------------------ 2./3. nonce, fees

    async def _broadcast_new(self, tx: TxParams, label: str) -> _InFlight:
        """Assign the next nonce and broadcast; the lock keeps nonces in sending order.

        The nonce is re-read when the node counts fewer transactions of ours than we sent: a
        reorg dropped one, and a nonce above that gap would never be mined.
        """
        async with self._lock:
            for _ in range(self.policy.nonce_retries + 1):
                pending = await self._pending_nonce()
                if self._next_nonce is None or pending < self._next_nonce:
                    if self._next_nonce is not None:
                        log.warning(
                            "%s: the node has our nonces up to %d, we sent up to %d: "
                            "re-syncing (a transaction was dropped)",
                            label,
                            pending,
                            self._next_nonce,
                        )
                    self._next_nonce = pending
                nonce = self._next_nonce
                fees = await self._market_fees()
                raw, tx_hash = self._sign(tx, nonce, fees)
                try:
                    await self._send_raw(raw, tx_hash)
                except _NonceRefused as exc:
                    log.warning("%s: nonce %d refused (%s); re-syncing", label, nonce, exc)
                    self._next_nonce = None
                    continue
                except ChainUnavailable:
                    self._next_nonce = None  # it may have been sent: ask the node next time
                    raise
                self._next_nonce = nonce + 1
                log.info(
                    "%s: sent %s nonce=%d maxFee=%d priority=%d",
                    label,
                    tx_hash,
                    nonce,
                    fees.max_fee,
                    fees.priority,
                )
                return _InFlight(nonce, tx, fees, raw, [tx_hash], _now())
        raise RetryablePublisherError(f"{label}: the node kept refusing nonces")

    async def _pending_nonce(self) -> int:
        try:
            return await self._w3.eth.get_transaction_count(self.address, "pending")  # type: ignore[arg-type]
        except _TRANSIENT as exc:
            raise ChainUnavailable(f"reading the nonce: {_describe(exc)}") from None

    async def _market_fees(self) -> Fees:
        try:
            priority = await self._w3.eth.max_priority_fee
            base = (await self._w3.eth.get_block("latest")).get("baseFeePerGas", 0)
        except _TRANSIENT as exc:
            raise ChainUnavailable(f"reading fees: {_describe(exc)}") from None
        max_fee = 2 * int(base) + int(priority)
        if max_fee > self.policy.max_fee_cap_wei:
            log.warning("fee %d wei/gas capped at %d", max_fee, self.policy.max_fee_cap_wei)
            max_fee = self.policy.max_fee_cap_wei
        return Fees(max_fee, min(int(priority), max_fee))

    def _sign(self, tx: TxParams, nonce: int, fees: Fees) -> tuple[bytes, str]:
        params: TxParams = {
            **tx,
            "nonce": Nonce(nonce),
            "maxFeePerGas": Wei(fees.max_fee),
            "maxPriorityFeePerGas": Wei(fees.priority),
            "type": 2,
        }
        params.pop("from", None)
        params.pop("gasPrice", None)
        signed = self._account.sign_transaction(params)  # type: ignore[arg-type]
        return bytes(signed.raw_transaction), _hex(signed.hash)

    async def _send_raw(self, raw: bytes, tx_hash: str) -> None:
        try:
            await self._w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            message = _rpc_message(exc)
            if _KNOWN.search(message):
                return  # the node holds this very transaction: it was sent
            if _NONCE.search(message):
                raise _NonceRefused(message) from None
            raise _classify(exc, f"sending {tx_hash}") from None
        except _TRANSIENT as exc:
            raise ChainUnavailable(f"sending {tx_hash}: {_describe(exc)}") from None

    # ------------------------------------------------------------------ 4./5. receipts

    async def _await_mined(self, flight: _InFlight, deadline: float) -> TxReceipt:
        while True:
            receipt = await self._find_receipt(flight.hashes)
            if receipt is not None:
                return receipt
            mined = await self._mined_nonce()
            if mined is not None and mined > flight.nonce:
                # Mined between the two reads, or taken by another transaction?
                receipt = await self._find_receipt(flight.hashes)
                if receipt is not None:
                    return receipt
                raise _NonceTaken
            now = _now()
            if now >= deadline:
                self._next_nonce = None  # it may still be in a pool: ask the node next time
                raise TxNotMined(
                    f"nonce {flight.nonce}: none of {len(flight.hashes)} transaction(s) "
                    "was mined in time",
                    tuple(flight.hashes),
                )
            if not await self._known(flight.hashes[-1]):
                # Dropped from the node's pool (a reorg discards what it orphans): send the
                # same signed bytes again; nothing new is signed, so nothing can happen twice.
                log.warning(
                    "nonce %d: %s was dropped; re-broadcasting it", flight.nonce, flight.hashes[-1]
                )
                await self._rebroadcast(flight.raw, flight.hashes[-1])
            elif mined is not None and mined < flight.nonce:
                # Queued behind a lower nonce of ours: a higher fee would not help. If nothing
                # of ours is pending there (a reorg dropped transactions whose calls already
                # returned), nothing will ever fill it: fill it ourselves.
                await self._fill_gap(flight, mined, now)
            elif now - flight.last_sent >= self.policy.pending_timeout_s:
                await self._replace(flight)
            await asyncio.sleep(self.policy.poll_interval_s)

    async def _resend(self, pending: PendingTx) -> None:
        """Our nonce was taken by a transaction not sent by this instance: the call again."""
        log.warning(
            "%s: nonce %d was used by a transaction not sent by this instance; "
            "sending the call again",
            pending.fn.fn_name,
            pending.flight.nonce,
        )
        tx = await self._prepare(pending.fn, pending.value)
        pending.flight = await self._broadcast_new(tx, pending.fn.fn_name)

    async def _fill_gap(self, flight: _InFlight, mined: int, now: float) -> None:
        """Send no-op transactions (0 to ourselves) for the nonces below ``flight``'s that no
        transaction of ours holds any more, once that has lasted ``GAP_GRACE_S``."""
        async with self._lock:  # no send of ours is half done while we look
            pending = await self._pending_nonce()
            if pending > mined:  # something of ours is pending at the next nonce: it moves
                flight.behind_gap_since = None
                return
            if flight.behind_gap_since is None:
                flight.behind_gap_since = now
                log.warning(
                    "nonce %d: nonces %d..%d of ours are gone from the chain and the pool "
                    "(a reorg?); filling them if nothing else does",
                    flight.nonce,
                    mined,
                    flight.nonce - 1,
                )
                return
            if now - flight.behind_gap_since < GAP_GRACE_S:
                return
            fees = await self._market_fees()
            chain_id = self._chain_id or await self._w3.eth.chain_id
            for nonce in range(mined, flight.nonce):
                noop: TxParams = {
                    "to": self.address,
                    "value": Wei(0),
                    "gas": 21_000,
                    "chainId": chain_id,
                }
                raw, tx_hash = self._sign(noop, nonce, fees)
                try:
                    await self._send_raw(raw, tx_hash)
                except (_NonceRefused, RetryablePublisherError) as exc:
                    log.info("gap nonce %d: %s", nonce, exc)
                    continue
                log.warning("nonce %d: filled with a no-op %s", nonce, tx_hash)
            flight.behind_gap_since = None

    async def _find_receipt(self, hashes: list[str]) -> TxReceipt | None:
        for tx_hash in reversed(hashes):  # the newest is the likeliest
            try:
                return await self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                continue
            except _TRANSIENT as exc:
                log.warning("reading the receipt of %s: %s", tx_hash, _describe(exc))
                return None
        return None

    async def _mined_nonce(self) -> int | None:
        """How many of our transactions are mined (None when the node does not answer)."""
        try:
            mined: int = await self._w3.eth.get_transaction_count(self.address, "latest")  # type: ignore[arg-type]
        except _TRANSIENT as exc:
            log.warning("reading the mined nonce: %s", _describe(exc))
            return None
        return mined

    async def _known(self, tx_hash: str) -> bool:
        """Whether the node holds ``tx_hash``, mined or in its pool (True when it cannot say)."""
        try:
            await self._w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        except _TRANSIENT as exc:
            log.warning("looking up %s: %s", tx_hash, _describe(exc))
        return True

    async def _replace(self, flight: _InFlight) -> None:
        """Re-sign ``flight`` with higher fees; at a cap, re-broadcast the last one instead."""
        flight.last_sent = _now()
        wanted = flight.fees.bumped()
        market = await self._market_fees_or(flight.fees)
        max_fee = min(max(wanted.max_fee, market.max_fee), self.policy.max_fee_cap_wei)
        fees = Fees(max_fee, min(max(wanted.priority, market.priority), max_fee))
        too_low = fees.max_fee < wanted.max_fee or fees.priority < wanted.priority
        if too_low or flight.replacements >= self.policy.max_replacements:
            if not flight.capped:
                flight.capped = True
                log.warning(
                    "nonce %d: not replacing %s again (fee cap or replacement limit reached); "
                    "re-broadcasting it and waiting",
                    flight.nonce,
                    flight.hashes[-1],
                )
            await self._rebroadcast(flight.raw, flight.hashes[-1])
            return
        raw, tx_hash = self._sign(flight.tx, flight.nonce, fees)
        try:
            await self._send_raw(raw, tx_hash)
        except _NonceRefused as exc:
            # "nonce too low": something was mined with it, the next poll finds out what.
            # "underpriced": this node wants a bigger step; the next replacement bumps from
            # these fees.
            log.warning("nonce %d: replacement refused: %s", flight.nonce, exc)
            flight.fees = fees
            flight.replacements += 1
            return
        except RetryablePublisherError as exc:
            log.warning("nonce %d: replacement not sent: %s", flight.nonce, exc)
            return
        flight.fees, flight.raw = fees, raw
        flight.replacements += 1
        flight.hashes.append(tx_hash)
        log.warning(
            "nonce %d: pending too long; replaced by %s maxFee=%d priority=%d (%d/%d)",
            flight.nonce,
            tx_hash,
            fees.max_fee,
            fees.priority,
            flight.replacements,
            self.policy.max_replacements,
        )

    async def _market_fees_or(self, fallback: Fees) -> Fees:
        try:
            return await self._market_fees()
        except ChainUnavailable:
            return fallback

    async def _rebroadcast(self, raw: bytes, tx_hash: str) -> None:
        """Send the same signed bytes again, in case the node dropped them from its pool."""
        try:
            await self._send_raw(raw, tx_hash)
        except (_NonceRefused, RetryablePublisherError) as exc:
            log.debug("re-broadcast of %s: %s", tx_hash, exc)


class PendingTx:
    """A call `TxSender.submit` broadcast: `wait` until it is mined and confirmed."""

    def __init__(
        self,
        sender: TxSender,
        fn: AsyncContractFunction,
        value: int,
        flight: _InFlight,
        deadline: float,
    ) -> None:
        self.sender, self.fn, self.value = sender, fn, value
        self.flight, self.deadline = flight, deadline

    @property
    def tx_hash(self) -> str:
        """The hash of the latest transaction sent for the call."""
        return self.flight.hashes[-1]

    async def wait(self, confirmations: int) -> SentTx:
        """The mined transaction with ``confirmations``; raises as `TxSender.send` does."""
        _check_confirmations(confirmations)
        sender, receipt = self.sender, None
        for attempt in range(sender.policy.nonce_retries + 1):
            try:
                receipt = await sender._await_mined(self.flight, self.deadline)
                break
            except _NonceTaken:
                if attempt < sender.policy.nonce_retries:
                    await sender._resend(self)
        if receipt is None:
            raise RetryablePublisherError(f"{self.fn.fn_name}: nonce taken repeatedly by others")
        sent = tuple(self.flight.hashes)
        if int(receipt["status"]) != 1:
            block = int(receipt["blockNumber"])
            name, args = await sender._replay_revert(self.fn, self.value, block)
            raise ContractReverted(self.fn.fn_name, name, args, _hex(receipt["transactionHash"]))
        result = await sender.wait_for_confirmations(
            _hex(receipt["transactionHash"]), confirmations, self.deadline
        )
        return replace(result, sent=sent)


def _check_confirmations(confirmations: int) -> None:
    if confirmations < 1:
        raise ValueError("confirmations must be >= 1 (1: mined in a block)")
