"""Cancel and deadlines on the real service: nothing canceled is generated, published or
registered, and the record says who stopped it and when.

Each test holds back the worker a cancel must reach first (the generator or the publisher
is started after the cancel), so what it checks does not depend on timing; the cancel in the
middle of a model call waits for its first announced denoising step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from acesteps.messages import TYPE_HEADER, CancelRequested, decode
from acesteps.settings import CommonSettings
from tests.integration.kafkaread import eventually, read_all
from tests.integration.pipeline import Pipeline, record, record_where, running_pipeline

ENDED = ("completed", "failed", "canceled", "revoked")


async def submit(pipeline: Pipeline, prompt: str, duration: int = 5, **headers: str) -> str:
    async with aiohttp.ClientSession() as http:
        url = f"{pipeline.api_url}/api/generate?wait=0"
        body = {"prompt": prompt, "duration": duration}
        async with http.post(url, json=body, headers=headers) as answer:
            assert answer.status == 202, await answer.text()
            rid: str = (await answer.json())["id"]
            return rid


async def cancel(pipeline: Pipeline, rid: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{pipeline.api_url}/api/generations/{rid}/cancel") as answer:
            return answer.status, await answer.json()


async def ended(pipeline: Pipeline, rid: str) -> dict[str, Any]:
    return await record_where(pipeline, rid, lambda r: r.get("status") in ENDED, f"{rid} ends")


async def audio_ready_of(pipeline: Pipeline, stack: CommonSettings) -> set[str]:
    """The request ids with an AudioReady on the audio topic."""
    records = await read_all(stack.kafka_bootstrap, f"{pipeline.prefix}.audio.v1")
    return {
        r.key.decode()
        for r in records
        if dict(r.headers or ()).get(TYPE_HEADER) == b"AudioReady" and r.key
    }


@pytest.fixture
def held(stack: CommonSettings) -> Iterator[Pipeline]:
    """The listener and the publisher; the generator starts when a test says."""
    with running_pipeline(stack, start=("listener", "publisher")) as pipeline:
        yield pipeline


async def test_canceled_and_expired_requests_are_never_generated(
    held: Pipeline, stack: CommonSettings
) -> None:
    canceled = await submit(held, "cancel me")
    expiring = await submit(held, "too late", **{"Cancel-After": "1s"})
    kept = await submit(held, "keep me")
    status, body = await cancel(held, canceled)
    assert status == 202 and body["status"] == "queued"
    await asyncio.sleep(1.5)  # the deadline passes while no generator runs
    held.start("generator")

    done = await ended(held, kept)
    assert done["status"] == "completed", done
    stopped = await ended(held, canceled)
    assert stopped["status"] == "canceled", stopped
    assert stopped["error"]["stage"] == "generator" and stopped["error"]["code"] == "canceled"
    assert "before generating" in stopped["error"]["message"]
    late = await ended(held, expiring)
    assert late["status"] == "canceled" and late["error"]["code"] == "deadline_exceeded", late
    assert await audio_ready_of(held, stack) == {kept}
    # A request that has ended cannot be canceled.
    status, body = await cancel(held, kept)
    assert status == 409 and body["error"]["code"] == "not_cancelable"
    status, _ = await cancel(held, canceled)
    assert status == 409


async def test_a_cancel_interrupts_the_model_between_steps(stack: CommonSettings) -> None:
    # 200 steps of a 30 s clip: the model runs for many seconds after its first announced
    # step, so the cancel reaches it well before the last one, however slow the machine.
    settings = {"generator": {"ACESTEPS_GENERATOR_STEPS": "200"}}
    with running_pipeline(stack, settings=settings) as pipeline:
        rid = await submit(pipeline, "a long one", duration=30)
        await record_where(
            pipeline,
            rid,
            lambda r: (r.get("progress") or {}).get("stepsDone", 0) >= 1,
            "the model's first steps",
        )
        status, _ = await cancel(pipeline, rid)
        assert status == 202
        stopped = await ended(pipeline, rid)
        assert stopped["status"] == "canceled", stopped
        message = stopped["error"]["message"]
        assert "after denoising step" in message and message.endswith("of 200"), message
        assert int(message.split("after denoising step ")[1].split()[0]) < 200
        assert rid not in await audio_ready_of(pipeline, stack)


async def test_a_track_canceled_before_publishing_is_not_pinned_or_registered(
    stack: CommonSettings,
) -> None:
    with running_pipeline(stack, start=("listener", "generator")) as pipeline:
        rid = await submit(pipeline, "made, then canceled")

        async def generated() -> bool:
            return rid in await audio_ready_of(pipeline, stack)

        await eventually(generated, 60, "the track to be generated")
        status, _ = await cancel(pipeline, rid)
        assert status == 202
        pipeline.start("publisher")
        stopped = await ended(pipeline, rid)
        assert stopped["status"] == "canceled", stopped
        assert stopped["error"]["stage"] == "publisher"
        assert stopped["txHash"] is None and stopped["cid"] is None
        # Not on chain: its off-chain id was never registered.
        offchain = record(pipeline, rid)
        assert offchain["status"] == "canceled"
        registry = pipeline.chain.attach(pipeline.contract).registry
        assert registry.functions.requests(rid).call()[1] == 0  # Status.None


async def test_requests_canceled_or_reclaimed_on_chain_are_stopped_by_the_services(
    held: Pipeline, stack: CommonSettings
) -> None:
    chain = held.chain.attach(held.contract)
    registry = chain.registry
    canceled, reclaimed, kept = chain.requested(
        [chain.request("cancel on chain", 5), chain.request("reclaim", 5), chain.request("ok", 5)]
    )
    chain.wait(chain.call(registry.functions.cancelRequest(canceled.request_id)))
    chain.mine(int(registry.functions.reclaimAfterBlocks().call()))
    chain.wait(chain.call(registry.functions.reclaim(reclaimed.request_id)))
    held.start("generator")

    assert (await ended(held, kept.request_id))["status"] == "completed"
    for rid in (canceled.request_id, reclaimed.request_id):
        stopped = await ended(held, rid)
        assert stopped["status"] == "canceled", stopped
        # Stopped by the generator: it learnt of it from the listener, before any model work.
        assert stopped["error"]["stage"] == "generator", stopped
        assert "canceled on chain" in stopped["error"]["message"]
        assert registry.functions.requests(rid).call()[1] == 4  # Status.Canceled
    cancels = await read_all(stack.kafka_bootstrap, f"{held.prefix}.cancels.v1")
    sent = [decode(CancelRequested, r.value) for r in cancels]
    assert {(c.request_id, c.reason) for c in sent} == {
        (canceled.request_id, "chain"),
        (reclaimed.request_id, "chain"),
    }
    assert all(c.by == chain.account.address and c.tx_hash for c in sent)
    # The failures loop of the publisher left them alone: no markFailed after the refund.
    logs = registry.events.GenerationFailed().get_logs(from_block=0)
    assert logs == []
