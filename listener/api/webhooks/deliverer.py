"""Sends the webhook deliveries the status store holds: claim, send, record, retry.

At least once: a delivery stays ``pending`` until an attempt gets a 2xx answer, and every
attempt of it carries the same ``webhook-id`` and body (a receiver dedupes on the id), with
the attempt's own ``webhook-timestamp`` and signature. Anything else (another status, no
answer within the timeout, no connection, a refused address) is retried after the next delay
of the schedule (``ACESTEPS_API_WEBHOOK_RETRY_S``: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h);
after the last one the delivery is ``failed``.

Order: the store hands out only the first pending delivery of each request, so a request's
later event waits until the earlier ones are delivered or failed; deliveries of different
requests run side by side, up to ``concurrency`` at once, and never wait for each other.
Every replica may run a deliverer: a claimed delivery is leased (the attempt's timeout plus a
margin), so one replica at a time sends it; one whose replica died is taken again when its
lease runs out.

Each attempt checks the URL again and connects only to addresses that pass
(`listener.api.webhooks.targets`): fresh DNS answers, no connection reuse, no redirects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver
from prometheus_client import Counter

from acesteps import logs
from listener.api.store import Store
from listener.api.webhooks.config import WebhookConfig
from listener.api.webhooks.models import Attempted, Claimed
from listener.api.webhooks.signing import derive_secret, headers
from listener.api.webhooks.targets import GuardedResolver, TargetRefused, literal

__all__ = ["Deliverer", "Outcome", "after", "default_connector"]

log = logging.getLogger(__name__)

ATTEMPTS = Counter(
    "acesteps_api_webhook_attempts_total",
    "webhook attempts, by what became of the delivery",
    ["outcome"],
)
USER_AGENT = "AceSteps-Webhooks/1"
MAX_ERROR_CHARS = 500

Connector = Callable[[AbstractResolver], aiohttp.BaseConnector]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a 2xx answer (``ok``), another status, or an error."""

    ok: bool
    http_status: int | None = None
    error: str | None = None


def after(attempts: int, outcome: Outcome, retry_s: tuple[float, ...], now: datetime) -> Attempted:
    """A delivery's state after attempt number ``attempts + 1`` came to ``outcome``."""
    if outcome.ok:
        return Attempted("delivered", now, None, outcome.http_status)
    made = attempts + 1
    error = (outcome.error or "")[:MAX_ERROR_CHARS] or None
    if made > len(retry_s):
        return Attempted("failed", now, None, outcome.http_status, error)
    next_at = now + timedelta(seconds=retry_s[made - 1])
    return Attempted("pending", now, next_at, outcome.http_status, error)


def default_connector(resolver: AbstractResolver) -> aiohttp.BaseConnector:
    """A fresh connection and fresh DNS answers (through ``resolver``) for every attempt."""
    return aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)


def _now() -> datetime:
    return datetime.now(UTC)


class Deliverer:
    """The loop that sends the store's due deliveries (this module's docstring).

    ``base_url`` makes the records' URLs absolute; ``resolver`` replaces the target rules'
    resolver (names are resolved through it, then filtered); ``connector`` makes the HTTP
    client's connector around the filtering resolver (tests pass one that refuses to connect
    anywhere unexpected); ``clock`` is the scheduling clock."""

    def __init__(
        self,
        store: Store,
        config: WebhookConfig,
        base_url: str,
        *,
        resolver: AbstractResolver | None = None,
        connector: Connector = default_connector,
        clock: Clock = _now,
        poll_s: float = 0.5,
        lease_s: float | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.targets = (
            config.targets if resolver is None else replace(config.targets, resolver=resolver)
        )
        self.base_url = base_url.rstrip("/")
        self.connector = connector
        self.clock = clock
        self.poll_s = poll_s
        self.lease = timedelta(seconds=config.timeout_s + 30 if lease_s is None else lease_s)
        self._http: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The HTTP client of the attempts: no proxies from the environment, no cookies."""
        connector = self.connector(GuardedResolver(self.targets))
        async with aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT},
        ) as http:
            self._http = http
            try:
                yield http
            finally:
                self._http = None

    async def run(self, stop: asyncio.Event) -> None:
        inflight: set[asyncio.Task[Attempted]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        async with self.session():
            try:
                while not stop.is_set():
                    if await self._fill(inflight):
                        continue  # as many as there was room for: more may be due
                    await asyncio.wait(
                        {stopping, *inflight},
                        timeout=self.poll_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            finally:
                # Attempts cut short keep their lease; another replica, or this one after a
                # restart, tries them again once it runs out.
                stopping.cancel()
                for task in inflight:
                    task.cancel()
                await asyncio.gather(stopping, *inflight, return_exceptions=True)

    async def _fill(self, inflight: set[asyncio.Task[Attempted]]) -> bool:
        """Claim due deliveries for the free slots and start them; whether every slot got one."""
        free = self.config.concurrency - len(inflight)
        if free <= 0:
            return False
        now = self.clock()
        try:
            claimed = await self.store.claim_deliveries(now, now + self.lease, free)
        except Exception:  # the store unreachable for a moment: the next poll tries again
            log.exception("claiming webhook deliveries failed")
            return False
        for delivery in claimed:
            task = asyncio.create_task(self.attempt(delivery), name=f"webhook {delivery.id}")
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        return len(claimed) == free

    async def attempt(self, delivery: Claimed) -> Attempted:
        """Send ``delivery`` once and record what came of it."""
        with logs.about(delivery.request_id):
            try:
                outcome = await self.send(delivery)
            except Exception as exc:  # a bug must not stop the other deliveries
                log.exception("webhook %s: the attempt failed", delivery.id)
                outcome = Outcome(False, error=f"internal error ({type(exc).__name__})")
            result = after(delivery.attempts, outcome, self.config.retry_s, self.clock())
            try:
                written = await self.store.record_delivery(delivery, result)
            except Exception:  # its lease runs out and it is attempted again
                log.exception("recording webhook %s failed", delivery.id)
                return result
            ATTEMPTS.labels(result.state if written else "lease_lost").inc()
            if result.state == "failed":
                log.warning(
                    "webhook %s (%s) failed after %d attempts: %s",
                    delivery.id,
                    delivery.event,
                    delivery.attempts + 1,
                    result.error,
                )
            elif result.state == "pending":
                log.info(
                    "webhook %s (%s): %s; again at %s",
                    delivery.id,
                    delivery.event,
                    result.error,
                    result.next_at,
                )
            return result

    async def send(self, delivery: Claimed) -> Outcome:
        """One attempt: the URL checked again, the signed body posted, the answer judged."""
        if self._http is None:
            raise RuntimeError("the deliverer's HTTP session is not open")
        policy = self.targets
        try:
            url = policy.check_url(delivery.url)
            ip = literal(url.raw_host or "")
            if ip is not None:  # the connector resolves names only: check literals here
                policy.check_address(ip)
        except TargetRefused as exc:
            return Outcome(False, error=f"refused: {exc}")
        body = delivery.body(self.base_url)
        secret = derive_secret(self.config.master, delivery.key_id)
        sent = headers(secret, delivery.id, int(time.time()), body)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with self._http.post(
                url, data=body, headers=sent, allow_redirects=False, timeout=timeout
            ) as answer:
                status = answer.status
        except TimeoutError:
            return Outcome(False, error=f"no answer within {self.config.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetRefused):
                return Outcome(False, error=f"refused: {exc.os_error}")
            return Outcome(False, error=f"cannot connect: {exc.os_error or exc}")
        except aiohttp.ClientError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Outcome(True, status)
        return Outcome(False, status, f"answered HTTP {status}")
