"""``GET /api/contract``: the deployment artifact of the registry this API serves.

The same document as ``deployments/<chainId>.json`` (`acesteps.artifact`): address, chain
id, deployment block and transaction, ``reclaimAfterBlocks``, the request fee and the
callback gas price, the contract's ``VERSION`` and its ABI, so a dApp needs nothing but the
API's URL. The parameters are read from the chain (`CachedArtifact`: at most every
``ttl_s``, the last good read kept while the node is down); without a reader
(``ApiDeps.contract_artifact`` None) the answer has what the API knows without the chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from web3.exceptions import Web3Exception

from acesteps import registry
from acesteps.artifact import ContractArtifact
from listener.api.deps import DEPS, ApiFailure

__all__ = ["CachedArtifact", "add_routes", "openapi_path"]

log = logging.getLogger(__name__)

_CHAIN_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, Web3Exception)


class CachedArtifact:
    """``read`` at most every ``ttl_s``; when a read fails, the last good artifact (if any)."""

    def __init__(
        self, read: Callable[[], Awaitable[ContractArtifact]], ttl_s: float = 10.0
    ) -> None:
        self._read, self._ttl_s = read, ttl_s
        self._value: ContractArtifact | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def __call__(self) -> ContractArtifact:
        async with self._lock:
            if time.monotonic() - self._read_at < self._ttl_s and self._value is not None:
                return self._value
            try:
                self._value = await self._read()
            except _CHAIN_ERRORS as exc:
                if self._value is None:
                    raise
                log.warning("reading the contract's parameters: %r; serving the last read", exc)
            else:
                self._read_at = time.monotonic()
            return self._value


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/contract", get_contract, name="contract")


async def get_contract(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if deps.contract_artifact is None:
        artifact = ContractArtifact(
            version=None,
            chain_id=deps.chain_id,
            address=deps.contract,
            deployment_block=None,
            deployment_tx=None,
            reclaim_after_blocks=None,
            request_fee_wei=None,
            callback_gas_price_wei=None,
            bytecode_hash=None,
            abi=registry.abi(),
        )
    else:
        try:
            artifact = await deps.contract_artifact()
        except _CHAIN_ERRORS as exc:
            raise ApiFailure(
                503,
                "chain_unavailable",
                f"reading the contract failed: {type(exc).__name__}",
                headers={"Retry-After": "5"},
            ) from None
    return web.Response(
        text=artifact.to_json(),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=10"},
    )


def openapi_path() -> dict[str, Any]:
    """The OpenAPI path item of ``/api/contract``."""
    schema = ContractArtifact.model_json_schema(by_alias=True, mode="serialization")
    error = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        "get": {
            "operationId": "getContract",
            "summary": "The registry's deployment artifact: address, chain, parameters, ABI",
            "responses": {
                "200": {
                    "description": "what a dApp needs to call the contract and follow its events",
                    "content": {"application/json": {"schema": schema}},
                },
                "429": {
                    "description": "rate limited",
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": error}},
                },
                "503": {
                    "description": "the chain node is unreachable; retry",
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
    }
