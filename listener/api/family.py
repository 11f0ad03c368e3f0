"""Variations in the API: a parent's children, by id, and the messages the API fans out.

A request with ``variations`` n is n requests (`acesteps.variations`): its own and n - 1
children, each an ordinary request. Their ids follow from the parent's:

- an HTTP parent's child ``k`` has the off-chain id ``variation_key(parent, k)`` and so the
  request id ``offchainRequestId`` of it on this deployment's registry (`Deployment`), as
  every HTTP request;
- a chain parent's child ``k`` has the request id ``variation_key(parent, k)`` itself (the
  contract creates it).

So a parent's record lists its children (``children``) from its own id alone, for either
source, and ``POST /api/generate`` makes the HTTP children (`http_family`).
"""

from __future__ import annotations

from typing import NamedTuple

from acesteps.messages import GenerationRequest
from acesteps.registry import offchain_request_id
from acesteps.variations import child_request, variation_key

__all__ = ["Deployment", "child_ids", "http_family"]


class Deployment(NamedTuple):
    """The registry HTTP requests are registered on: their ids are its
    ``offchainRequestId``."""

    chain_id: int
    contract: str

    def request_id(self, offchain_id: str) -> str:
        return offchain_request_id(self.chain_id, self.contract, offchain_id)


def child_ids(
    request_id: str, variations: int | None, source: str | None, deployment: Deployment | None
) -> list[str] | None:
    """The ids of a request's children, variation 1 first; None for a request without
    variations, or for an HTTP one when the deployment is not known."""
    if variations is None or variations < 2:
        return None
    keys = [variation_key(request_id, k) for k in range(1, variations)]
    if source == "chain":
        return keys
    if deployment is None:
        return None
    return [deployment.request_id(key) for key in keys]


def http_family(parent: GenerationRequest, deployment: Deployment) -> list[GenerationRequest]:
    """An HTTP request and its children's messages (the parent first, then variation 1 ...);
    the request alone when it asks for no variations."""
    family = [parent]
    for k in range(1, parent.variations or 1):
        key = variation_key(parent.request_id, k)
        family.append(child_request(parent, k, deployment.request_id(key), key))
    return family
