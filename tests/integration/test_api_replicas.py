"""Two API replicas sharing one PostgreSQL status store, on the real service: the pipeline's
listener (chain poller + API) and a second, API-only listener. A request submitted to one is
followed, fetched and verified through the other."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest

from acesteps.hashing import keccak256_hex
from acesteps.settings import CommonSettings
from tests.integration.anvil import free_port
from tests.integration.pgdb import fresh_database
from tests.integration.pipeline import Pipeline, running_pipeline, wait_healthy
from tests.integration.services import ServiceProcess


@pytest.fixture(scope="module")
def replicas(stack: CommonSettings) -> Iterator[tuple[Pipeline, str, str]]:
    with (
        fresh_database() as store_url,
        running_pipeline(stack, ACESTEPS_API_STORE_URL=store_url) as pipeline,
    ):
        port = free_port()
        second = ServiceProcess(
            "listener",
            {
                **pipeline.env,
                "ACESTEPS_LISTENER_CHAIN_ENABLED": "false",
                "ACESTEPS_API_PORT": str(port),
                "ACESTEPS_API_STORE_URL": store_url,
                "ACESTEPS_API_AUDIO_CACHE_DIR": str(pipeline.log_dir / "audio-2"),
            },
            pipeline.log_dir / "listener-2.log",
        )
        pipeline.services["listener-2"] = second.start()
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, pipeline, "listener-2")
        yield pipeline, url, store_url


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, **kwargs) as answer:
            if answer.content_type == "application/json":
                return answer.status, await answer.json()
            return answer.status, await answer.read()


async def test_a_request_submitted_to_one_replica_is_served_by_the_other(
    replicas: tuple[Pipeline, str, str],
) -> None:
    pipeline, second, store_url = replicas
    body = {"prompt": "two replicas, one store", "duration": 5}
    status, record = await call("POST", f"{second}/api/generate", json=body)
    assert status == 200 and record["status"] == "completed", record
    assert record["audioUrl"].startswith(second)
    status, same = await call("GET", f"{pipeline.api_url}/api/generations/{record['id']}")
    assert status == 200
    for name in ("status", "audioHash", "cid", "txHash", "seed", "requester", "prompt"):
        assert same[name] == record[name], name
    status, data = await call("GET", f"{pipeline.api_url}/api/generations/{record['id']}/audio")
    assert status == 200 and keccak256_hex(data) == record["audioHash"]
    status, verdict = await call("GET", f"{second}/api/generations/{record['id']}/verify")
    assert status == 200 and verdict["status"] == "MATCH"
    with psycopg.connect(store_url) as db:  # the record lives in the shared database
        (doc,) = db.execute("SELECT doc FROM generations WHERE id = %s", (record["id"],)).fetchone()
    assert doc["status"] == "completed" and doc["cid"] == record["cid"]


async def test_an_idempotent_retry_on_the_other_replica_is_the_same_request(
    replicas: tuple[Pipeline, str, str],
) -> None:
    pipeline, second, _ = replicas
    body = {"prompt": "retried elsewhere", "duration": 5}
    key = {"Idempotency-Key": "one-order"}
    first = await call("POST", f"{pipeline.api_url}/api/generate?wait=0", json=body, headers=key)
    again = await call("POST", f"{second}/api/generate", json=body, headers=key)
    assert first[0] == 202 and again[0] == 200
    assert again[1]["id"] == first[1]["id"] and again[1]["status"] == "completed"
    # The body's fingerprint is in the shared store: another body under the same key is
    # refused by the other replica too, however soon it comes.
    key = {"Idempotency-Key": "another-order"}
    await call("POST", f"{pipeline.api_url}/api/generate?wait=0", json=body, headers=key)
    changed = {**body, "duration": 6}
    status, error = await call("POST", f"{second}/api/generate?wait=0", json=changed, headers=key)
    assert status == 422 and error["error"]["code"] == "idempotency_key_reused"
