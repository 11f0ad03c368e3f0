"""The HTTP API against the real service: Kafka, Kubo, anvil and the three services running.

One pipeline for the module (starting it costs seconds); each test makes its own requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from acesteps.hashing import keccak256_hex
from acesteps.settings import CommonSettings
from tests.integration.pipeline import Pipeline, running_pipeline

FINAL = ("completed", "failed", "revoked")
ORDER = ["queued", "generating", "publishing", "completed"]


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


async def post(pipeline: Pipeline, body: dict[str, Any], query: str = "", **headers: str) -> Any:
    async with aiohttp.ClientSession() as http:
        url = f"{pipeline.api_url}/api/generate{query}"
        async with http.post(url, json=body, headers=headers) as answer:
            return answer.status, dict(answer.headers), await answer.json()


async def sse_statuses(pipeline: Pipeline, rid: str) -> list[dict[str, Any]]:
    """Every ``status`` event of the stream, until the server ends it."""
    events = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(f"{pipeline.api_url}/api/generations/{rid}/events") as answer:
            assert answer.status == 200
            text = (await answer.read()).decode()
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "status":
            events.append(json.loads(fields["data"]))
    return events


async def test_generate_waits_and_answers_the_completed_track(pipeline: Pipeline) -> None:
    body = {"prompt": "a calm piano piece", "duration": 5, "tags": ["piano"], "seed": 11}
    status, headers, record = await post(pipeline, body)
    assert status == 200, record
    assert record["status"] == "completed" and record["source"] == "http"
    assert headers["Location"] == f"/api/generations/{record['id']}"
    # The seed contract's fields, all filled.
    for name in ("id", "audioUrl", "audioHash", "cid", "duration", "prompt", "txHash", "seed"):
        assert record[name] not in (None, ""), name
    assert record["seed"] == 11 and record["duration"] == 5 and record["model"] == "default"
    assert record["modelId"].startswith("tiny") and record["weightsDigest"].startswith("sha256:")
    async with aiohttp.ClientSession() as http:
        async with http.get(record["audioUrl"]) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"] == "audio/mpeg"
            data = await answer.read()
        assert keccak256_hex(data) == record["audioHash"] and len(data) == record["sizeBytes"]
        async with http.get(record["audioUrl"], headers={"Range": "bytes=100-199"}) as answer:
            assert answer.status == 206
            assert answer.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            assert await answer.read() == data[100:200]
        verify_url = f"{pipeline.api_url}/api/generations/{record['id']}/verify"
        async with http.get(verify_url) as answer:
            verdict = await answer.json()
    assert verdict["status"] == "MATCH" and verdict["computedAudioHash"] == record["audioHash"]
    # The registration is on the chain, as anyone can check.
    raw_id = bytes.fromhex(record["id"][2:])
    on_hash, on_cid = pipeline.chain.registry.functions.trackOf(raw_id).call()
    assert "0x" + bytes(on_hash).hex() == record["audioHash"] and on_cid == record["cid"]


async def test_events_arrive_in_order_and_end_at_a_final_registration(pipeline: Pipeline) -> None:
    status, headers, record = await post(
        pipeline, {"prompt": "lofi beat", "duration": 5}, "?wait=0"
    )
    assert status == 202 and record["status"] in ORDER[:-1]
    assert headers["Location"].endswith(record["id"])
    events = await sse_statuses(pipeline, record["id"])
    steps = [(e["status"], e["final"]) for e in events]
    # In order, no repeats: completed first as published, then once its registration is final.
    assert steps[-2:] == [("completed", False), ("completed", True)], steps
    statuses = [s for s, _ in steps[:-1]]
    assert statuses == sorted(set(statuses), key=ORDER.index), steps
    assert len(statuses) >= 2, steps
    assert events[-1]["audioHash"] and events[-1]["txHash"] and events[-1]["confirmations"] >= 2
    # A stream opened after the end gives the settled record once and closes.
    again = await sse_statuses(pipeline, record["id"])
    assert [(e["status"], e["final"]) for e in again] == [("completed", True)]


async def test_idempotent_retries_get_one_request(pipeline: Pipeline) -> None:
    body = {"prompt": "sea shanty", "duration": 5}
    first = await post(pipeline, body, "?wait=0", **{"Idempotency-Key": "retry-me"})
    second = await post(pipeline, body, **{"Idempotency-Key": "retry-me"})
    assert first[2]["id"] == second[2]["id"]
    assert second[0] == 200 and second[2]["status"] == "completed"
    other = await post(pipeline, {**body, "duration": 6}, **{"Idempotency-Key": "retry-me"})
    assert other[0] == 422 and other[2]["error"]["code"] == "idempotency_key_reused"


async def test_a_refused_prompt_ends_failed_with_the_reason(pipeline: Pipeline) -> None:
    body = {"prompt": "a song in the style of Taylor Swift", "duration": 5}
    status, _, record = await post(pipeline, body)
    assert status == 200 and record["status"] == "failed", record
    assert record["error"]["stage"] == "generator" and record["error"]["message"]
    assert record["audioUrl"] is None


async def test_chain_requests_are_visible_through_the_api(pipeline: Pipeline) -> None:
    tx = pipeline.chain.request("a chain request", duration=5)
    (requested,) = pipeline.chain.requested([tx])
    url = f"{pipeline.api_url}/api/generations/{requested.request_id}"
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(url) as answer:
                record = await answer.json() if answer.status == 200 else {}
            if record.get("status") in FINAL:
                break
            await asyncio.sleep(0.1)
    assert record["status"] == "completed" and record["source"] == "chain", record
    assert record["requestTxHash"] == tx and record["contract"].lower() == pipeline.contract.lower()


async def test_health_metrics_and_openapi(pipeline: Pipeline) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{pipeline.api_url}/healthz") as answer:
            health = await answer.json()
        async with http.get(f"{pipeline.api_url}/metrics") as answer:
            metrics = await answer.text()
        async with http.get(f"{pipeline.api_url}/api/openapi.json") as answer:
            document = await answer.json()
    assert health["status"] == "ok" and health["projection"]["running"] is True
    assert 'acesteps_api_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    assert "acesteps_api_projection_records_total" in metrics
    assert document["openapi"].startswith("3.1") and "/api/generate" in document["paths"]
