"""The deliverer against a real SQLite status store and a receiver on 127.0.0.1 that verifies
with ``standardwebhooks``: signing, retries with one id, the schedule, per-request order,
independence of requests, and the address checks at every attempt. DNS is a table and the
connector refuses any address but 127.0.0.1, so nothing leaves the machine."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from acesteps.messages import GenerationProgress, GenerationRequest, Message
from listener.api.models import Generation, Status
from listener.api.rows import Event
from listener.api.sqlitestore import SqliteStore
from listener.api.store import submit
from listener.api.webhooks.config import WebhookConfig
from listener.api.webhooks.deliverer import Deliverer, Outcome, after
from listener.api.webhooks.models import EVENTS, Subscription, WebhookDelivery
from listener.api.webhooks.signing import derive_secret
from listener.api.webhooks.targets import TargetPolicy
from listener.settings import WEBHOOK_RETRY_S, ListenerSettings
from tests.factories import track_published
from tests.webhookfakes import LoopbackOnlyConnector, MapResolver, Receiver

MASTER = b"deliverer test master key"
KEY = "alice"
RETRY_S = (0.05, 0.1, 0.1)


def rid_of(n: int) -> str:
    return "0x" + f"{n:064x}"


def events(*messages: Message) -> list[Event]:
    return [(str(m.request_id), m) for m in messages]  # type: ignore[attr-defined]


def progress(rid: str, stage: str) -> GenerationProgress:
    return GenerationProgress(request_id=rid, stage=stage, worker="w")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the schedule (pure)


def test_attempts_follow_the_schedule_then_the_delivery_fails() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    failure = Outcome(False, 500, "answered HTTP 500")
    waits = []
    for made in range(len(WEBHOOK_RETRY_S)):
        result = after(made, failure, WEBHOOK_RETRY_S, now)
        assert result.state == "pending" and result.http_status == 500
        assert result.next_at is not None
        waits.append((result.next_at - now).total_seconds())
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert sum(waits) > 24 * 3600  # retried for more than a day
    last = after(len(WEBHOOK_RETRY_S), failure, WEBHOOK_RETRY_S, now)
    assert (last.state, last.next_at, last.error) == ("failed", None, "answered HTTP 500")
    done = after(3, Outcome(True, 204), WEBHOOK_RETRY_S, now)
    assert (done.state, done.next_at, done.http_status, done.error) == (
        "delivered",
        None,
        204,
        None,
    )


def test_the_settings_default_to_that_schedule_and_take_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tuple(ListenerSettings().api_webhook_retry_s) == WEBHOOK_RETRY_S
    monkeypatch.setenv("ACESTEPS_API_WEBHOOK_RETRY_S", "0.1, 2,30")
    monkeypatch.setenv("ACESTEPS_API_WEBHOOK_ALLOW_NETS", "127.0.0.1/32,fd00::/8")
    settings = ListenerSettings()
    assert settings.api_webhook_retry_s == [0.1, 2, 30]
    assert settings.api_webhook_allow_nets == [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("fd00::/8"),
    ]
    assert settings.api_webhooks and not settings.api_webhook_allow_http
    for bad in ("-1", "x"):
        monkeypatch.setenv("ACESTEPS_API_WEBHOOK_RETRY_S", bad)
        with pytest.raises(ValueError):
            ListenerSettings()
    monkeypatch.delenv("ACESTEPS_API_WEBHOOK_RETRY_S")
    monkeypatch.setenv("ACESTEPS_API_WEBHOOK_SECRET", "too short")
    with pytest.raises(ValueError, match="16 characters"):
        ListenerSettings()


# ------------------------------------------------------------------ the loop


class Harness:
    def __init__(self, store: SqliteStore, receiver: Receiver, hosts: Path) -> None:
        self.store = store
        self.receiver = receiver
        self.hosts = hosts
        self.connectors: list[LoopbackOnlyConnector] = []

    def set_host(self, name: str, *addresses: str) -> None:
        found = json.loads(self.hosts.read_text())
        found[name] = list(addresses)
        self.hosts.write_text(json.dumps(found))

    def config(self, **kw: Any) -> WebhookConfig:
        targets = TargetPolicy(
            allow_http=True,
            allow_nets=(ipaddress.ip_network("127.0.0.1/32"),),
            resolver=MapResolver({}),  # knows no name: the deliverer's own resolver is used
        )
        fields: dict[str, Any] = {"retry_s": RETRY_S, "timeout_s": 0.5, **kw}
        return WebhookConfig(MASTER, targets, **fields)

    def connector(self, resolver: Any) -> LoopbackOnlyConnector:
        made = LoopbackOnlyConnector(resolver=resolver, use_dns_cache=False, force_close=True)
        self.connectors.append(made)
        return made

    @asynccontextmanager
    async def running(self, **kw: Any) -> AsyncIterator[Deliverer]:
        deliverer = Deliverer(
            self.store,
            self.config(**kw),
            "https://api.example",
            resolver=MapResolver(path=self.hosts),
            connector=self.connector,
            poll_s=0.02,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(deliverer.run(stop))
        try:
            yield deliverer
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        assert [v for c in self.connectors for v in c.violations] == []

    async def submit(
        self, rid: str, path: str, wanted: tuple[str, ...] = EVENTS, host: str | None = None
    ) -> None:
        """A request submitted with a webhook, then read back from Kafka (which lets its
        deliveries go)."""
        g = Generation(id=rid, status=Status.QUEUED, source="http", prompt="x", requester=KEY)
        url = f"http://{host or '127.0.0.1'}:{self.receiver.port}{path}"
        sub = Subscription(url=url, events=wanted, key_id=KEY)
        await submit(self.store, g, "fp", "{}", sub)
        request = GenerationRequest(request_id=rid, source="http", prompt="x", requester=KEY)
        await self.store.apply(events(request), {})

    async def until(self, check: Callable[[], Any], what: str, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await check() if asyncio.iscoroutinefunction(check) else check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    async def log(self, rid: str) -> list[WebhookDelivery]:
        return await self.store.deliveries(rid)

    async def settled(self, rid: str, n: int) -> list[WebhookDelivery]:
        found: list[WebhookDelivery] = []

        async def done() -> bool:
            found[:] = await self.log(rid)
            return len(found) == n and all(d.status != "pending" for d in found)

        await self.until(done, f"{n} settled deliveries of {rid}")
        return found


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await SqliteStore(tmp_path / "status.sqlite3").open()
    receiver = await Receiver(derive_secret(MASTER, KEY)).start()
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"hook.test": ["127.0.0.1"]}))
    yield Harness(store, receiver, hosts)
    await receiver.stop()
    await store.close()


async def test_each_event_is_signed_sent_once_in_order(harness: Harness) -> None:
    rid = rid_of(1)
    await harness.submit(rid, "/ok", host="hook.test")
    await harness.store.apply(
        events(progress(rid, "generating"), progress(rid, "publishing"), track_published(rid)), {}
    )
    async with harness.running():
        log = await harness.settled(rid, 4)
    assert harness.receiver.rejected == []
    assert harness.receiver.types("/ok") == [
        "generation.queued",
        "generation.generating",
        "generation.publishing",
        "generation.completed",
    ]
    assert [r.id for r in harness.receiver.received] == [d.id for d in log]
    assert all(d.status == "delivered" and d.attempts == 1 for d in log)
    assert all(d.last_http_status == 204 and d.next_attempt_at is None for d in log)
    last = harness.receiver.received[-1].body
    assert last["data"]["status"] == "completed" and last["data"]["id"] == rid
    assert last["data"]["audioUrl"] == f"https://api.example/api/generations/{rid}/audio"
    assert abs(harness.receiver.received[-1].timestamp - time.time()) < 60


async def test_failed_attempts_are_retried_with_the_same_id(harness: Harness) -> None:
    rid = rid_of(2)
    harness.receiver.answers["/flaky"] = [500, 302, 503]
    await harness.submit(rid, "/flaky", ("queued",))
    async with harness.running():
        (d,) = await harness.settled(rid, 1)
    assert (d.status, d.attempts, d.last_http_status, d.last_error) == ("delivered", 4, 204, None)
    assert harness.receiver.ids == [("/flaky", d.id)] * 4  # redirects are not followed
    assert len(harness.receiver.received) == 1


async def test_after_the_last_retry_it_failed_and_the_next_event_goes(harness: Harness) -> None:
    rid = rid_of(3)
    harness.receiver.answers["/down"] = [500] * 4
    await harness.submit(rid, "/down", ("queued", "completed"))
    await harness.store.apply(events(track_published(rid)), {})
    async with harness.running():
        first, second = await harness.settled(rid, 2)
    assert (first.status, first.attempts) == ("failed", 1 + len(RETRY_S))
    assert (first.last_http_status, first.last_error) == (500, "answered HTTP 500")
    assert (second.status, second.attempts) == ("delivered", 1)
    assert harness.receiver.types("/down") == ["generation.completed"]


async def test_a_slow_request_holds_its_own_events_not_anyone_elses(harness: Harness) -> None:
    slow, fast = rid_of(4), rid_of(5)
    # The slow receiver times out twice (0.5 s each) before it answers.
    harness.receiver.answers["/slow"] = ["hang", "hang"]
    await harness.submit(slow, "/slow", ("queued", "generating", "completed"))
    await harness.store.apply(events(progress(slow, "generating"), track_published(slow)), {})
    async with harness.running():
        await harness.until(lambda: harness.receiver.attempts.get("/slow"), "a first attempt")
        await harness.submit(fast, "/fast", ("queued", "generating", "completed"))
        await harness.store.apply(events(progress(fast, "generating"), track_published(fast)), {})
        await harness.settled(fast, 3)
        assert harness.receiver.types("/slow") == []  # still retrying its first event
        pending = await harness.log(slow)
        assert [d.status for d in pending] == ["pending"] * 3
        assert pending[0].attempts == 0 or pending[0].last_error == "no answer within 0.5 s"
        await harness.settled(slow, 3)
    assert harness.receiver.types("/fast") == [
        "generation.queued",
        "generation.generating",
        "generation.completed",
    ]
    assert harness.receiver.types("/slow") == harness.receiver.types("/fast")
    # Each of the slow request's events was attempted only once the one before it had ended.
    slow_ids = [i for p, i in harness.receiver.ids if p == "/slow"]
    assert slow_ids == sorted(slow_ids, key=[d.id for d in await harness.log(slow)].index)


async def test_a_name_now_resolving_to_a_private_address_is_never_called(
    harness: Harness,
) -> None:
    rid = rid_of(6)
    await harness.submit(rid, "/rebind", ("queued",), host="hook.test")
    harness.set_host("hook.test", "10.0.0.1")  # after the submit's check: DNS rebinding
    async with harness.running():
        (d,) = await harness.settled(rid, 1)
    assert d.status == "failed" and d.last_http_status is None
    assert d.last_error is not None and "10.0.0.1 is a private address" in d.last_error
    assert harness.receiver.attempts == {}


async def test_a_literal_private_address_is_refused_before_connecting(harness: Harness) -> None:
    rid = rid_of(7)
    await harness.submit(rid, "/x", ("queued",), host="169.254.169.254")
    async with harness.running():
        (d,) = await harness.settled(rid, 1)
    assert d.status == "failed" and "cloud metadata" in (d.last_error or "")
    assert harness.receiver.attempts == {}


async def test_a_closed_port_is_retried_until_the_receiver_is_up(harness: Harness) -> None:
    rid = rid_of(8)
    port = harness.receiver.port
    await harness.receiver.stop()
    await harness.submit(rid, "/late", ("queued",))
    async with harness.running(retry_s=(0.1,) * 50):

        async def failed_twice() -> bool:
            (d,) = await harness.log(rid)
            return d.attempts >= 2

        await harness.until(failed_twice, "two failed attempts")
        (d,) = await harness.log(rid)
        assert d.status == "pending" and "cannot connect" in (d.last_error or "")
        assert d.next_attempt_at is not None
        harness.receiver = await Receiver(harness.receiver.secret, port=port).start()
        (d,) = await harness.settled(rid, 1)
    assert d.status == "delivered" and d.attempts >= 3
    assert harness.receiver.types("/late") == ["generation.queued"]


async def test_deliveries_wait_until_the_request_is_read_back_from_kafka(
    harness: Harness,
) -> None:
    rid = rid_of(9)
    g = Generation(id=rid, status=Status.QUEUED, source="http", prompt="x", requester=KEY)
    url = f"http://127.0.0.1:{harness.receiver.port}/wait"
    await submit(harness.store, g, "fp", "{}", Subscription(url=url, events=EVENTS, key_id=KEY))
    async with harness.running():
        await asyncio.sleep(0.3)
        assert harness.receiver.attempts == {}
        request = GenerationRequest(request_id=rid, source="http", prompt="x", requester=KEY)
        await harness.store.apply(events(request), {})
        (d,) = await harness.settled(rid, 1)
    assert d.status == "delivered" and harness.receiver.types("/wait") == ["generation.queued"]


async def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(
    harness: Harness,
) -> None:
    rid = rid_of(10)
    await harness.submit(rid, "/lease", ("queued",))
    now = datetime.now(UTC)
    (held,) = await harness.store.claim_deliveries(now, now + timedelta(seconds=30), 10)
    assert await harness.store.claim_deliveries(now, now + timedelta(seconds=30), 10) == []
    later = now + timedelta(seconds=31)
    (again,) = await harness.store.claim_deliveries(later, later + timedelta(seconds=30), 10)
    assert again.id == held.id and again.lease != held.lease
    done = after(0, Outcome(True, 204), RETRY_S, later)
    assert not await harness.store.record_delivery(held, done)  # the lease was taken
    assert await harness.store.record_delivery(again, done)
