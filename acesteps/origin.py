"""Where a request came from: the chain (its log's position) or the HTTP API (its off-chain id).

Carried by the topic messages (`acesteps.messages`) and the generation manifest
(`acesteps.manifest`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from acesteps.types import Address, Bytes32Hex, Source

__all__ = ["ChainOrigin", "RequestOrigin"]


class ChainOrigin(BaseModel):
    """Where an on-chain request was emitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    chain_id: int = Field(ge=1)
    contract: Address
    block_number: int = Field(ge=0)
    block_hash: Bytes32Hex
    tx_hash: Bytes32Hex
    log_index: int = Field(ge=0)


class RequestOrigin(BaseModel):
    """Where a request came from, carried along so the publisher registers it the right way:
    a chain request (``registerTrack``, while it is pending on chain) or an HTTP request
    (``registerOffchainTrack`` with its ``offchain_id``). Absent (None) in records written
    before these fields existed."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: Source | None = None
    chain: ChainOrigin | None = None
    offchain_id: Bytes32Hex | None = None
