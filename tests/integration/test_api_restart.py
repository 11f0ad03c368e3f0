"""The API process killed and restarted, on the real service: the status projection resumes
from the offsets stored with its records (nothing lost, nothing counted twice), and a store
deleted outright is rebuilt from the topics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from acesteps.settings import CommonSettings
from tests.integration.kafkaread import eventually
from tests.integration.pipeline import Pipeline, running_pipeline, wait_healthy
from tests.integration.services import ServiceProcess

FINAL = ("completed", "failed", "revoked")


@pytest.fixture
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


async def submit(pipeline: Pipeline, n: int, duration: int) -> list[str]:
    async with aiohttp.ClientSession() as http:
        ids = []
        for i in range(n):
            body = {"prompt": f"restart test {i}", "duration": duration}
            async with http.post(f"{pipeline.api_url}/api/generate?wait=0", json=body) as answer:
                assert answer.status == 202
                ids.append((await answer.json())["id"])
        return ids


async def records(pipeline: Pipeline, ids: list[str], timeout_s: float = 120) -> list[Any]:
    """Each request's record once all are final."""
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(timeout_s):
            while True:
                found = []
                for rid in ids:
                    async with http.get(f"{pipeline.api_url}/api/generations/{rid}") as answer:
                        found.append(await answer.json() if answer.status == 200 else {})
                if all(r.get("status") in FINAL for r in found):
                    return found
                await asyncio.sleep(0.3)


def restart_listener(pipeline: Pipeline, **env: str) -> ServiceProcess:
    old = pipeline.services["listener"]
    fresh = ServiceProcess("listener", {**old.env, **env}, old.log)
    pipeline.services["listener"] = fresh.start()
    wait_healthy(pipeline.api_url, pipeline)
    return fresh


async def test_kill9_mid_work_loses_nothing(pipeline: Pipeline) -> None:
    ids = await submit(pipeline, 3, duration=20)
    pipeline.services["listener"].kill9()  # while the generator works on them
    restart_listener(pipeline)
    done = await records(pipeline, ids)
    assert [r["status"] for r in done] == ["completed"] * 3, done
    assert len({r["audioHash"] for r in done}) == 3
    assert all(r["prompt"].startswith("restart test") and r["txHash"] for r in done)


async def test_a_deleted_store_is_rebuilt_from_the_topics(pipeline: Pipeline) -> None:
    ids = await submit(pipeline, 2, duration=5)
    before = await records(pipeline, ids)
    pipeline.services["listener"].stop()
    store = pipeline.log_dir / "rebuilt.sqlite3"
    restart_listener(pipeline, ACESTEPS_API_STORE_URL=f"sqlite:///{store}")
    after = await records(pipeline, ids, timeout_s=30)
    keys = ("id", "status", "source", "prompt", "audioHash", "cid", "txHash", "seed", "model")
    assert [{k: r[k] for k in keys} for r in after] == [{k: r[k] for k in keys} for r in before]


async def test_kill9_between_the_store_commit_and_kafka_still_completes_the_request(
    stack: CommonSettings,
) -> None:
    """The API accepted a request (store row committed) and died before Kafka had it: the
    restarted API's outbox sends it, and it completes."""
    with running_pipeline(stack, start=("generator", "publisher")) as pipeline:
        marker = pipeline.log_dir / "accepted"
        env = {
            **pipeline.env,
            **pipeline.service_env["listener"],
            "ACESTEPS_API_RESEND_AFTER_S": "1",
        }
        dying = ServiceProcess(
            "tests.integration.api_worker",
            {**env, "APITEST_MARKER": str(marker)},
            pipeline.log_dir / "listener-dying.log",
        )
        pipeline.services["listener"] = dying.start()
        wait_healthy(pipeline.api_url, pipeline)
        async with aiohttp.ClientSession() as http:
            post = asyncio.create_task(
                http.post(
                    f"{pipeline.api_url}/api/generate?wait=0",
                    json={"prompt": "outbox test", "duration": 5},
                )
            )

            async def accepted() -> bool:
                return marker.exists() and len(marker.read_text()) == 66

            await eventually(accepted, 30, "the API to commit the request and hang")
            request_id = marker.read_text()
            dying.kill9()
            with contextlib.suppress(aiohttp.ClientError):
                await post  # the connection died with the process
        pipeline.services["listener"] = ServiceProcess(
            "listener", env, pipeline.log_dir / "listener.log"
        ).start()
        wait_healthy(pipeline.api_url, pipeline)
        (done,) = await records(pipeline, [request_id])
        assert done["status"] == "completed" and done["prompt"] == "outbox test", done
        assert pipeline.services["listener"].mentions(f"re-sent request {request_id}")
