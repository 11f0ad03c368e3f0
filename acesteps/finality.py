"""When a block is final, and where a transaction stands: the chain facts that reorgs change.

`Finality` is the rule (``ACESTEPS_FINALITY_TAG`` / ``ACESTEPS_FINALITY_DEPTH``): a block is
final once it is at or below the node's ``finalized`` (or ``safe``) block where the chain has
such a tag, else once it is ``depth`` blocks deep (1: the head block). The publisher follows
each registration until it is final, ``acesteps verify`` says whether a registration is, and
the API shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound

from acesteps.types import to_hex

__all__ = ["Finality", "Mined", "TxState", "tx_state"]


@dataclass(frozen=True)
class Finality:
    depth: int = 12
    tag: Literal["finalized", "safe"] | None = None

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError("a finality depth counts blocks from the head: at least 1")

    def describe(self) -> str:
        if self.tag is not None:
            return f"{self.tag} tag"
        return f"{self.depth} block" + ("s" if self.depth != 1 else "")

    async def is_final(self, w3: AsyncWeb3[Any], block_number: int, confirmations: int) -> bool:
        """Whether ``block_number``, ``confirmations`` deep (read with it), is final."""
        if self.tag is not None:
            return block_number <= int((await w3.eth.get_block(self.tag))["number"])
        return confirmations >= self.depth


@dataclass(frozen=True)
class Mined:
    """A transaction in a block of the chain the node follows now."""

    tx_hash: str
    block_number: int
    block_hash: str
    status: int
    confirmations: int


TxState = Mined | Literal["pending", "dropped"]
"""Where a transaction stands: mined (in the node's chain), pending (in its pool), or dropped
(neither: a reorg orphaned its block and nothing put it back)."""


async def tx_state(w3: AsyncWeb3[Any], tx_hash: str) -> TxState:
    """Raises the connection errors of the node (callers retry them)."""
    try:
        receipt = await w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        try:
            await w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return "dropped"
        return "pending"
    head = int(await w3.eth.block_number)
    number = int(receipt["blockNumber"])
    return Mined(
        tx_hash=to_hex(receipt["transactionHash"]),
        block_number=number,
        block_hash=to_hex(receipt["blockHash"]),
        status=int(receipt["status"]),
        confirmations=head - number + 1,
    )
