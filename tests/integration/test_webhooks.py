"""Webhooks on the real service: Kafka, Kubo, anvil, the generator (tiny model) and the
publisher running, and the listener as `tests.integration.webhook_worker` (test DNS, a
connector that connects to 127.0.0.1 only). Receivers run here, on 127.0.0.1, and verify
every message with the independent ``standardwebhooks`` package.

One pipeline for the module; each test makes its own requests and receivers. Retries are
quick (0.3 to 2 s apart, six attempts) and an attempt waits 1 s at most.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from acesteps.settings import CommonSettings
from tests.integration.anvil import free_port
from tests.integration.pipeline import Pipeline, running_pipeline, wait_healthy
from tests.integration.services import ServiceProcess
from tests.webhookfakes import Receiver

ALL = ["queued", "generating", "publishing", "completed", "failed", "canceled"]
SETTINGS = {
    "ACESTEPS_API_WEBHOOK_ALLOW_HTTP": "true",
    "ACESTEPS_API_WEBHOOK_ALLOW_NETS": "127.0.0.1/32",
    "ACESTEPS_API_WEBHOOK_RETRY_S": "0.3,0.6,1,1.5,2",
    "ACESTEPS_API_WEBHOOK_TIMEOUT_S": "1",
}
ATTEMPTS = 6


class Hooks:
    """The module's pipeline, with its listener as the webhook worker."""

    def __init__(self, pipeline: Pipeline, hosts: Path, violations: Path, env: dict[str, str]):
        self.pipeline = pipeline
        self.hosts = hosts
        self.violations = violations
        self.env = env

    @property
    def api(self) -> str:
        return self.pipeline.api_url

    def start_listener(self) -> None:
        log = self.pipeline.log_dir / "listener.log"
        proc = ServiceProcess("tests.integration.webhook_worker", self.env, log)
        self.pipeline.services["listener"] = proc.start()
        wait_healthy(self.api, self.pipeline)

    def name(self, *addresses: str) -> str:
        """A fresh test host name resolving to ``addresses`` (in the listener's DNS table)."""
        name = f"h{uuid.uuid4().hex[:10]}.test"
        self.point(name, *addresses)
        return name

    def point(self, name: str, *addresses: str) -> None:
        table = json.loads(self.hosts.read_text())
        table[name] = list(addresses)
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        tmp.replace(self.hosts)  # whole, for the listener reading it meanwhile

    async def secret(self) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.api}/api/webhooks/secret") as answer:
                assert answer.status == 200
                return str((await answer.json())["secret"])

    async def receiver(self, port: int = 0) -> Receiver:
        return await Receiver(await self.secret(), port=port).start()

    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            url = f"{self.api}/api/generate?wait=0"
            async with http.post(url, json={"duration": 5, **body}) as answer:
                return answer.status, await answer.json()

    async def log(self, rid: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.api}/api/generations/{rid}/webhooks") as answer:
                assert answer.status == 200, await answer.text()
                items: list[dict[str, Any]] = (await answer.json())["items"]
                return items

    async def until(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 90
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            for name, proc in self.pipeline.services.items():
                assert proc.alive(), f"{name} exited:\n{self.pipeline.logs()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.pipeline.logs()}")
            await asyncio.sleep(0.1)

    async def settled(self, rid: str, n: int) -> list[dict[str, Any]]:
        """The request's log once it has ``n`` deliveries and none is pending."""
        found: list[dict[str, Any]] = []

        async def done() -> bool:
            found[:] = await self.log(rid)
            return len(found) == n and all(d["status"] != "pending" for d in found)

        await self.until(done, f"{n} settled deliveries of {rid}")
        return found


@pytest.fixture(scope="module")
def hooks(stack: CommonSettings) -> Iterator[Hooks]:
    with running_pipeline(stack, start=("generator", "publisher")) as pipeline:
        hosts = pipeline.log_dir / "webhook-hosts.json"
        hosts.write_text("{}")
        violations = pipeline.log_dir / "webhook-violations"
        env = {
            **pipeline.env,
            **pipeline.service_env["listener"],
            **SETTINGS,
            "WEBHOOKTEST_HOSTS": str(hosts),
            "WEBHOOKTEST_VIOLATIONS": str(violations),
        }
        running = Hooks(pipeline, hosts, violations, env)
        running.start_listener()
        yield running
    # No test may have made the service connect anywhere but 127.0.0.1.
    assert not violations.exists(), violations.read_text()


async def test_every_subscribed_event_arrives_once_in_order_signed(hooks: Hooks) -> None:
    receiver = await hooks.receiver()
    try:
        host = hooks.name("127.0.0.1")
        status, record = await hooks.submit(
            {
                "prompt": "webhooks: every event",
                "webhook": f"http://{host}:{receiver.port}/all",
                "webhookEvents": ALL,
            }
        )
        assert status == 202, record
        log = await hooks.settled(record["id"], 4)
    finally:
        await receiver.stop()
    assert receiver.rejected == []  # every signature verified
    assert receiver.types("/all") == [f"generation.{s}" for s in ALL[:4]]
    assert [r.id for r in receiver.received] == [d["id"] for d in log]  # once per delivery id
    assert all(d["status"] == "delivered" and d["lastHttpStatus"] == 204 for d in log)
    last = receiver.received[-1].body
    assert last["data"]["id"] == record["id"] and last["data"]["status"] == "completed"
    assert last["data"]["audioUrl"] == f"{hooks.api}/api/generations/{record['id']}/audio"
    assert last["data"]["txHash"] and last["data"]["cid"]
    assert [r.body["data"]["status"] for r in receiver.received] == ALL[:4]


async def test_a_receiver_down_for_a_while_gets_it_after_retries(hooks: Hooks) -> None:
    port = free_port()  # nothing listens there yet
    status, record = await hooks.submit(
        {
            "prompt": "webhooks: receiver down",
            "webhook": f"http://127.0.0.1:{port}/late",
            "webhookEvents": ["queued"],
        }
    )
    assert status == 202, record

    async def refused_twice() -> bool:
        log = await hooks.log(record["id"])
        return bool(log) and log[0]["attempts"] >= 2

    await hooks.until(refused_twice, "two refused attempts")
    (pending,) = await hooks.log(record["id"])
    assert pending["status"] == "pending" and "cannot connect" in pending["lastError"]
    assert pending["nextAttemptAt"]
    receiver = await hooks.receiver(port)
    try:
        (done,) = await hooks.settled(record["id"], 1)
    finally:
        await receiver.stop()
    assert done["status"] == "delivered" and done["attempts"] >= 3
    assert done["id"] == pending["id"] and [r.id for r in receiver.received] == [done["id"]]


async def test_a_failing_receiver_ends_failed_and_holds_up_no_one_else(hooks: Hooks) -> None:
    receiver = await hooks.receiver()
    receiver.answers["/bad"] = ["hang", 500, "hang", 500, "hang", 500]  # every retry fails
    try:
        _, bad = await hooks.submit(
            {
                "prompt": "webhooks: failing receiver",
                "webhook": f"{receiver.base}/bad",
                "webhookEvents": ["queued", "completed"],
            }
        )
        await hooks.submit(
            {
                "prompt": "webhooks: healthy receiver",
                "webhook": f"{receiver.base}/good",
                "webhookEvents": ALL,
            }
        )

        async def good_done() -> bool:
            return "generation.completed" in receiver.types("/good")

        await hooks.until(good_done, "the healthy receiver's completed")
        # Meanwhile the other request's first delivery is still being retried.
        first = (await hooks.log(bad["id"]))[0]
        assert first["type"] == "generation.queued" and first["status"] == "pending", first
        log = await hooks.settled(bad["id"], 2)
    finally:
        await receiver.stop()
    assert receiver.types("/good") == [f"generation.{s}" for s in ALL[:4]]
    failed, after = log
    assert (failed["status"], failed["attempts"]) == ("failed", ATTEMPTS)
    assert failed["lastHttpStatus"] == 500 and failed["lastError"] == "answered HTTP 500"
    assert failed["nextAttemptAt"] is None
    # Its attempts all carried the one id; the next event went once it had failed.
    bad_ids = [i for path, i in receiver.ids if path == "/bad"]
    assert bad_ids == [failed["id"]] * ATTEMPTS + [after["id"]]
    assert after["status"] == "delivered" and receiver.types("/bad") == ["generation.completed"]


async def test_pending_deliveries_survive_an_api_restart(hooks: Hooks) -> None:
    port = free_port()
    status, record = await hooks.submit(
        {
            "prompt": "webhooks: restart",
            "webhook": f"http://127.0.0.1:{port}/restart",
            "webhookEvents": ["queued", "completed"],
        }
    )
    assert status == 202, record

    async def tried() -> bool:
        log = await hooks.log(record["id"])
        return bool(log) and log[0]["attempts"] >= 1

    await hooks.until(tried, "a first attempt")
    before = await hooks.log(record["id"])
    secret = await hooks.secret()
    hooks.pipeline.services["listener"].kill9()
    # Verified with the secret from before: the master key is kept in the status store.
    receiver = await Receiver(secret, port=port).start()
    try:
        hooks.start_listener()
        assert await hooks.secret() == secret
        log = await hooks.settled(record["id"], 2)
    finally:
        await receiver.stop()
    assert receiver.rejected == []
    assert log[0]["id"] == before[0]["id"] and log[0]["attempts"] > before[0]["attempts"]
    assert [d["status"] for d in log] == ["delivered", "delivered"]
    assert receiver.types("/restart") == ["generation.queued", "generation.completed"]


@pytest.mark.parametrize(
    ("webhook", "words"),
    [
        ("https://10.0.0.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[::1]/hook", "loopback"),
        ("https://127.0.0.2/hook", "loopback"),  # outside the allowed 127.0.0.1/32
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://100.64.0.1/hook", "shared"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata name"),
        ("http://user:pw@127.0.0.1:9/hook", "user info"),
        ("PRIVATE", "192.168.1.5 is a private address"),
    ],
)
async def test_unsafe_webhooks_are_refused_at_submit(
    hooks: Hooks, webhook: str, words: str
) -> None:
    if webhook == "PRIVATE":
        webhook = f"https://{hooks.name('192.168.1.5')}/hook"
    status, body = await hooks.submit({"prompt": "webhooks: refused", "webhook": webhook})
    assert status == 422, body
    assert body["error"]["field"] == "webhook" and words in body["error"]["message"], body


async def test_a_host_rebound_to_a_private_address_is_never_called(hooks: Hooks) -> None:
    receiver = await hooks.receiver()
    try:
        host = hooks.name("127.0.0.1")
        status, record = await hooks.submit(
            {"prompt": "webhooks: rebinding", "webhook": f"http://{host}:{receiver.port}/x"}
        )
        assert status == 202, record
        hooks.point(host, "10.0.0.1")  # after the submit's check
        (d,) = await hooks.settled(record["id"], 1)  # completed: a final status, by default
    finally:
        await receiver.stop()
    assert d["type"] == "generation.completed" and d["status"] == "failed"
    assert d["attempts"] == ATTEMPTS and d["lastHttpStatus"] is None
    assert "refused" in d["lastError"] and "10.0.0.1 is a private address" in d["lastError"]
    assert receiver.attempts == {}
    assert not hooks.violations.exists()
