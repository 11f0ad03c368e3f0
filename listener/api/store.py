"""The status store: one `Generation` per request, and how far the projection has read.

SQLite (`listener.api.sqlitestore`, embedded, the default) serves one API process. Several
API replicas share one PostgreSQL database instead (`listener.api.pgstore`); both keep the
same two tables:

- ``generations``: the request id, its `Generation` as JSON, and for HTTP requests the
  fingerprint of the submitted body (idempotent retries must send the same body) and, until
  the projection has read the request back from Kafka, the request record itself (the
  outbox: `listener.api.outbox` sends again what an API process accepted but may have died
  before Kafka acknowledged);
- ``offsets``: the next offset to read per (projection, topic, partition), written in the
  same transaction as the records it covers, so a restart neither loses nor re-counts;
- ``webhook_deliveries`` (`listener.api.webhooks`): one row per webhook message, made in the
  transaction that accepts a request (its ``queued``) or that applies the records changing its
  status, for a request whose ``generations.webhook`` (its subscription) asks for that status;
- ``meta``: values the replicas sharing the store share (the webhooks' master key).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from listener.api.family import Deployment
from listener.api.models import Generation
from listener.api.rows import Event, ListQuery, Offsets, Row, Submission
from listener.api.webhooks.models import Attempted, Claimed, Subscription, WebhookDelivery

__all__ = ["Store", "open_store", "submit"]


class Store(Protocol):
    async def get(self, request_id: str) -> Generation | None: ...

    async def submit_all(
        self,
        submissions: Sequence[Submission],
        fingerprint: str,
        webhook: Subscription | None = None,
    ) -> list[tuple[Row, bool]]:
        """Insert HTTP requests unless their ids exist, in one transaction (a request and its
        variations: all are stored or none), each with its outbox (its request record's JSON),
        the same fingerprint and the same ``webhook`` subscription (with the delivery of
        ``queued`` when it asks for it); (the row, whether it was inserted) of each, in the
        order given. A request the projection stored first (never submitted here) gets the
        subscription, and a delivery of its current status."""
        ...

    async def unsent(self, before: datetime, limit: int = 1000) -> list[str]:
        """The outbox of requests submitted before ``before`` (aware) that the projection has
        not read back from Kafka yet, oldest first."""
        ...

    async def page(self, query: ListQuery) -> tuple[list[Generation], bool]:
        """One page of a requester's records, newest first; whether more follow."""
        ...

    async def queued_before(self, created: str) -> int:
        """How many queued records were created before ``created`` (a `time_key`)."""
        ...

    async def forget(self, *request_ids: str) -> None:
        """Remove submitted requests that never reached Kafka (in one transaction)."""
        ...

    async def apply(self, events: Iterable[Event], offsets: Offsets) -> list[Generation]:
        """Fold events into their records, store the webhook deliveries of the status
        transitions, and move the offsets, atomically; the changed records."""
        ...

    async def meta(self, name: str, value: str) -> str:
        """The stored value of ``name``; ``value`` is stored first when there is none (the
        first replica to ask decides)."""
        ...

    async def claim_deliveries(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claimed]:
        """Lease up to ``limit`` due webhook deliveries until ``lease_until``: the first
        pending one of each request, once its request is on Kafka (read back)."""
        ...

    async def record_delivery(self, claimed: Claimed, result: Attempted) -> bool:
        """An attempt's outcome, unless the lease ran out and was taken; whether written."""
        ...

    async def deliveries(self, request_id: str) -> list[WebhookDelivery]:
        """A request's webhook deliveries, in the order they are sent."""
        ...

    async def offsets(self) -> Offsets: ...

    async def close(self) -> None: ...


async def open_store(url: str, deployment: Deployment | None = None) -> Store:
    """The store at ``url``: ``sqlite:///PATH`` or ``postgresql://...``; ``deployment``: the
    registry of this API's HTTP requests (their records list a parent's children by id)."""
    if url.startswith("sqlite:///"):
        from listener.api.sqlitestore import SqliteStore

        return await SqliteStore(url.removeprefix("sqlite:///"), deployment=deployment).open()
    from listener.api.pgstore import PostgresStore  # psycopg: the optional postgres extra

    return await PostgresStore(url, deployment=deployment).open()


async def submit(
    store: Store,
    generation: Generation,
    fingerprint: str,
    outbox: str,
    webhook: Subscription | None = None,
) -> tuple[Row, bool]:
    """`Store.submit_all` for one request."""
    (found,) = await store.submit_all([Submission(generation, outbox)], fingerprint, webhook)
    return found
