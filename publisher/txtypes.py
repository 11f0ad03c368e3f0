"""The transaction sender's value types and its reading of the node's answers.

`TxPolicy`, `Fees` and `SentTx` are what `publisher.txsender.TxSender` is configured with,
signs with and returns; `_InFlight` is its record of one nonce being mined. The patterns and
`_classify` turn a node's refusal (a JSON-RPC error message) into what the sender does next:
done, re-sync the nonce, or a retryable publisher error. None of this talks to the node, so
it lives apart from the sender.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from web3.exceptions import Web3RPCError
from web3.types import TxParams, TxReceipt

from publisher.errors import InsufficientFunds, RetryablePublisherError

__all__ = ["Fees", "SentTx", "TxPolicy"]

# The node already holds this exact transaction (geth "already known", anvil "transaction
# already imported", others "known transaction").
_KNOWN = re.compile(r"already known|already imported|known transaction", re.IGNORECASE)
_NONCE = re.compile(
    r"nonce too low|nonce too high|invalid nonce|nonce has already been used|"
    r"replacement transaction underpriced|replacement.*underpriced",
    re.IGNORECASE,
)
_FUNDS = re.compile(r"insufficient funds", re.IGNORECASE)


@dataclass(frozen=True)
class TxPolicy:
    """How patient and how generous the sender is; built from the publisher's settings."""

    max_fee_cap_wei: int = 500 * 10**9
    gas_margin: float = 1.25
    pending_timeout_s: float = 60.0
    max_replacements: int = 5
    deadline_s: float = 900.0
    """The longest one `TxSender.send` waits for its transaction to be mined."""
    poll_interval_s: float = 1.0
    nonce_retries: int = 3

    def __post_init__(self) -> None:
        if self.max_fee_cap_wei < 1 or self.gas_margin < 1 or self.max_replacements < 0:
            raise ValueError("need max_fee_cap_wei >= 1, gas_margin >= 1, max_replacements >= 0")
        if min(self.pending_timeout_s, self.deadline_s, self.poll_interval_s) <= 0:
            raise ValueError("timeouts and the poll interval must be positive")


@dataclass(frozen=True)
class Fees:
    max_fee: int
    priority: int

    def bumped(self) -> Fees:
        """Both fields raised by at least 12.5% (rounded up), as a replacement must be."""
        return Fees(_bump(self.max_fee), _bump(self.priority))


def _bump(value: int) -> int:
    return max(value + 1, (value * 9 + 7) // 8)


@dataclass(frozen=True)
class SentTx:
    """What came of one `TxSender.send`: the mined transaction and every hash sent for it."""

    tx_hash: str
    block_number: int
    block_hash: str
    status: int
    gas_used: int
    effective_gas_price: int
    sent: tuple[str, ...] = ()
    confirmations: int = 1
    """Blocks from the transaction's to the head when it was last read (1: the head)."""
    receipt: TxReceipt | None = field(default=None, repr=False, compare=False)
    """The receipt as last read (its logs are those of the block it is confirmed in)."""

    @classmethod
    def of(cls, receipt: TxReceipt) -> SentTx:
        return cls(
            tx_hash=_hex(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            block_hash=_hex(receipt["blockHash"]),
            status=int(receipt["status"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
            receipt=receipt,
        )


@dataclass
class _InFlight:
    """One nonce of ours and every signed transaction sent with it."""

    nonce: int
    tx: TxParams
    fees: Fees
    raw: bytes
    hashes: list[str]
    last_sent: float
    replacements: int = 0
    capped: bool = field(default=False)
    behind_gap_since: float | None = None
    """When it was first seen queued behind a nonce of ours that nothing will fill."""


class _NonceRefused(Exception):
    """The node refused the nonce; re-sync and try again."""


class _NonceTaken(Exception):
    """A transaction that is not ours was mined with our nonce."""


def _classify(exc: Web3RPCError, doing: str) -> Exception:
    message = _rpc_message(exc)
    if _FUNDS.search(message):
        return InsufficientFunds(f"{doing}: {message}")
    # Anything else the node refused (fee below its minimum, a full pool, a node bug) may
    # pass later; dead-lettering a valid registration would be the worse mistake.
    return RetryablePublisherError(f"{doing}: {message}")


def _rpc_message(exc: Web3RPCError) -> str:
    response = exc.rpc_response or {}
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(exc.message)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _hex(value: object) -> str:
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return "0x" + text.lower().removeprefix("0x")


def _now() -> float:
    return asyncio.get_running_loop().time()
