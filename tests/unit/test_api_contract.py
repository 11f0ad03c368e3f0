"""``GET /api/contract`` (`listener.api.contract`) and its cache, with fake chain reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from acesteps import registry
from acesteps.artifact import ContractArtifact
from listener.api.contract import CachedArtifact
from tests.unit.apiapp import CONTRACT

ARTIFACT = ContractArtifact(
    version="1.1.0",
    chain_id=31337,
    address=CONTRACT,
    deployment_block=12,
    deployment_tx="0x" + "ab" * 32,
    reclaim_after_blocks=7200,
    request_fee_wei=str(2**80 - 1),  # above 2^53: a string, as JavaScript needs
    callback_gas_price_wei="1000000000",
    bytecode_hash="0x" + "cd" * 32,
    abi=registry.abi(),
)


async def test_the_artifact_is_served_in_camel_case(make_client: Callable[..., Any]) -> None:
    client, deps, _ = await make_client()
    deps.contract_artifact = CachedArtifact(fake_reads([ARTIFACT]))
    answer = await client.get("/api/contract")
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "public, max-age=10"
    body = await answer.json()
    assert body == {
        "contractName": "AceStepsRegistry",
        "version": "1.1.0",
        "chainId": 31337,
        "address": CONTRACT,
        "deploymentBlock": 12,
        "deploymentTx": "0x" + "ab" * 32,
        "reclaimAfterBlocks": 7200,
        "requestFeeWei": str(2**80 - 1),
        "callbackGasPriceWei": "1000000000",
        "bytecodeHash": "0x" + "cd" * 32,
        "abi": registry.abi(),
    }
    assert ContractArtifact.model_validate(body) == ARTIFACT  # a saved file loads back


async def test_without_chain_reads_the_api_says_what_it_knows(
    make_client: Callable[..., Any],
) -> None:
    client, _, _ = await make_client()
    body = await (await client.get("/api/contract")).json()
    assert (body["chainId"], body["address"], body["abi"]) == (31337, CONTRACT, registry.abi())
    assert body["deploymentBlock"] is None and body["requestFeeWei"] is None


async def test_a_node_that_is_down_is_a_503_until_a_first_read(
    make_client: Callable[..., Any],
) -> None:
    client, deps, _ = await make_client()
    deps.contract_artifact = CachedArtifact(fake_reads([aiohttp.ClientError("refused")]))
    answer = await client.get("/api/contract")
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "5"
    assert (await answer.json())["error"]["code"] == "chain_unavailable"


async def test_the_cache_reads_once_per_ttl_and_keeps_the_last_good_read() -> None:
    newer = ARTIFACT.model_copy(update={"request_fee_wei": "5"})
    reads = fake_reads([ARTIFACT, TimeoutError(), newer])
    cache = CachedArtifact(reads, ttl_s=0)
    assert await cache() == ARTIFACT
    assert await cache() == ARTIFACT  # the read failed: the last good one
    assert await cache() == newer
    assert reads.calls == 3  # type: ignore[attr-defined]

    once = fake_reads([ARTIFACT])
    cached = CachedArtifact(once, ttl_s=60)
    assert await cached() == await cached() == ARTIFACT
    assert once.calls == 1  # type: ignore[attr-defined]


def test_the_openapi_document_describes_it() -> None:
    from listener.api.openapi import openapi_document

    operation = openapi_document("http://x")["paths"]["/api/contract"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"address", "chainId", "deploymentBlock", "abi", "version"} <= set(schema["properties"])


def fake_reads(outcomes: list[ContractArtifact | Exception]) -> Any:
    async def read() -> ContractArtifact:
        read.calls += 1  # type: ignore[attr-defined]
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    read.calls = 0  # type: ignore[attr-defined]
    return read


@pytest.mark.parametrize("fee", [0, 10**15, 2**80 - 1])
def test_a_saved_artifact_loads_back(tmp_path: Any, fee: int) -> None:
    artifact = ARTIFACT.model_copy(update={"request_fee_wei": str(fee)})
    path = artifact.save(tmp_path / "deployments")
    assert path.name == "31337.json"
    assert ContractArtifact.load(path) == artifact
