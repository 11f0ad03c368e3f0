"""Variations: one request for up to four tracks, each of them a request of its own.

A request whose ``variations`` option is n (2-4) stands for n tracks: its own (variation 0)
and n - 1 children (variations 1 .. n-1). A child is an ordinary request in every respect (its
own id, record, status, registration, cancel, and on chain its own share of the fee and its
own refund), made from the parent's options with consecutive seeds:

- **its key**: ``keccak256(abi.encode(parentId, uint256(index)))`` (`variation_key`). On chain
  that is the child's request id; over HTTP it is the child's off-chain id, and its request id
  is the contract's ``offchainRequestId`` of it, as for every HTTP request (so
  ``registerOffchainTrack`` registers it);
- **its seed**: the parent's effective seed plus its index, modulo 2^32 (`variation_seed`); a
  parent's effective seed is its ``seed``, or the first four bytes of keccak256 of its id
  (`default_seed`), as for every request;
- **its message** (`child_request`): the parent's options with that seed and without
  ``variations``, and ``parent_id`` and ``variation`` naming the parent and its index.

Who fans out: the contract, for chain requests (one transaction creates the n requests and
takes n fees); the API, for HTTP requests (the parent and its children stored in one
transaction, then queued). Nothing downstream knows about variations beyond recording the
link: the generator, the publisher and verification see n requests.
"""

from __future__ import annotations

from typing import Final

from acesteps.hashing import keccak256, keccak256_hex
from acesteps.messages import GenerationRequest
from acesteps.options import MAX_SEED

__all__ = [
    "MAX_VARIATIONS",
    "child_request",
    "default_seed",
    "variation_key",
    "variation_seed",
]

MAX_VARIATIONS: Final = 4


def variation_key(parent_id: str, index: int) -> str:
    """``keccak256(abi.encode(bytes32 parentId, uint256 index))``, 0x-hex."""
    if not 1 <= index < MAX_VARIATIONS:
        raise ValueError(f"variation index {index} is outside 1..{MAX_VARIATIONS - 1}")
    return keccak256_hex(bytes.fromhex(parent_id.removeprefix("0x")) + index.to_bytes(32, "big"))


def default_seed(request_id: str) -> int:
    """The seed of a request that sets none: the first four bytes of keccak256(its id)."""
    return int.from_bytes(keccak256(bytes.fromhex(request_id.removeprefix("0x")))[:4], "big")


def variation_seed(parent: GenerationRequest, index: int) -> int:
    """Child ``index``'s seed: the parent's effective seed plus the index, modulo 2^32."""
    base = parent.seed if parent.seed is not None else default_seed(parent.request_id)
    return (base + index) % (MAX_SEED + 1)


def child_request(
    parent: GenerationRequest, index: int, request_id: str, offchain_id: str | None = None
) -> GenerationRequest:
    """The message of the parent's variation ``index`` (1 .. variations-1), under the id the
    caller derived from `variation_key` (chain: the key; HTTP: ``offchainRequestId`` of it,
    with the key as ``offchain_id``)."""
    if parent.variations is None or not 1 <= index < parent.variations:
        raise ValueError(f"request {parent.request_id} has no variation {index}")
    fields = parent.model_dump(exclude={"variations", "seed", "request_id", "offchain_id"})
    return GenerationRequest(
        **fields,
        request_id=request_id,
        offchain_id=offchain_id,
        seed=variation_seed(parent, index),
        parent_id=parent.request_id,
        variation=index,
    )
