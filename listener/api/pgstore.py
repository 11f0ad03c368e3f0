"""The status store in PostgreSQL, shared by several API replicas (`listener.api.store`).

Same two tables as `SqliteStore` (``generations``, with the record as ``jsonb``, and
``offsets``), created when missing. Every replica runs its own projection over the same
records, so writes are made safe against each other:

- `apply` inserts the requests that have no row yet (``ON CONFLICT DO NOTHING``: a replica
  that loses the race waits for the winner's commit), then locks the others with ``SELECT ...
  FOR UPDATE`` and folds the events into what is stored, all in id order and in one
  transaction with the offsets. Folding is idempotent and only moves a status forward, so
  replicas applying the same records, in any interleaving, converge to the same record.
- `submit` is ``INSERT ... ON CONFLICT DO NOTHING``, then a locked read of the existing row;
  `submit_all` (a request and its variations) does that for each, in one transaction, in id
  order.
- Offsets are keyed by the projection name. Replicas sharing a name overwrite each other's
  position; any stored position is one whose records are all applied (by whichever replica
  wrote it), so a restart at worst re-reads records, which changes nothing.

Connections: psycopg's async API without a pool. One connection serves the projection
(`apply`); another serves the HTTP requests (`get`, `submit`, `forget`, `offsets`), so that
a status read never waits for a batch. Each is used by one task at a time (an asyncio.Lock)
and is reopened on next use when the server dropped it; the call that saw it drop fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from listener.api.family import Deployment
from listener.api.models import Generation
from listener.api.rows import (
    Event,
    ListQuery,
    Offsets,
    Row,
    Submission,
    Transition,
    fold,
    list_sql,
    listed_as,
)
from listener.api.webhooks import postgres as hooks
from listener.api.webhooks.models import (
    Attempted,
    Claimed,
    Subscription,
    WebhookDelivery,
    deliveries_for,
    new_delivery,
)

__all__ = ["PostgresStore"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS generations (
        id TEXT PRIMARY KEY,
        doc JSONB NOT NULL,
        status TEXT NOT NULL,
        fingerprint TEXT,
        request_seen BOOLEAN NOT NULL DEFAULT FALSE,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS offsets (
        projection TEXT NOT NULL,
        topic TEXT NOT NULL,
        part INTEGER NOT NULL,
        next_offset BIGINT NOT NULL,
        PRIMARY KEY (projection, topic, part)
    )""",
    # A store made before the outbox and the listing gets their columns.
    "ALTER TABLE generations ADD COLUMN IF NOT EXISTS outbox TEXT",
    "ALTER TABLE generations ADD COLUMN IF NOT EXISTS requester TEXT",
    "ALTER TABLE generations ADD COLUMN IF NOT EXISTS source TEXT",
    "ALTER TABLE generations ADD COLUMN IF NOT EXISTS created_key TEXT",
    "CREATE INDEX IF NOT EXISTS generations_unsent ON generations (updated_at) "
    "WHERE outbox IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS generations_queued ON generations (created_key) "
    "WHERE status = 'queued'",
    "CREATE INDEX IF NOT EXISTS generations_by_requester "
    "ON generations (requester, created_key, id)",
    # /tracks: the completed records of every requester, newest first
    "CREATE INDEX IF NOT EXISTS generations_completed ON generations (created_key, id) "
    "WHERE status = 'completed'",
)
SCHEMA_LOCK = 0x61636573_74657073  # advisory lock key: replicas starting together
_COLUMNS = "doc::text, fingerprint, request_seen"
_ROWS = (
    "unnest(%s::text[], %s::jsonb[], %s::text[], %s::bool[], %s::timestamptz[], "
    "%s::text[], %s::text[], %s::text[])"
)

Conn = psycopg.AsyncConnection[TupleRow]


class _Connection:
    """One connection, one task at a time, reopened when it was lost."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Conn]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            yield self._conn

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


class PostgresStore:
    """`listener.api.store.Store` in PostgreSQL at ``url`` (``postgresql://...``)."""

    def __init__(
        self, url: str, projection: str = "api", deployment: Deployment | None = None
    ) -> None:
        self._projection = projection
        self._deployment = deployment
        self._writer = _Connection(url)  # the projection's batches
        self._requests = _Connection(url)  # everything the HTTP handlers ask
        self._hooks = _Connection(url)  # the webhook deliverer's claims and outcomes

    async def open(self) -> PostgresStore:
        async with self._requests.use() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in (*SCHEMA, *hooks.SCHEMA):
                await conn.execute(statement)
            cur = await conn.execute(
                "SELECT id, doc::text FROM generations WHERE created_key IS NULL"
            )
            for rid, doc in await cur.fetchall():  # rows from before the listing columns
                await conn.execute(
                    "UPDATE generations SET requester = %s, source = %s, created_key = %s "
                    "WHERE id = %s",
                    (*listed_as(Generation.model_validate_json(doc)), rid),
                )
        return self

    async def close(self) -> None:
        await self._writer.close()
        await self._requests.close()
        await self._hooks.close()

    # ------------------------------------------------------------ reads

    async def get(self, request_id: str) -> Generation | None:
        async with self._requests.use() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM generations WHERE id = %s", (request_id,)
            )
            found = await cur.fetchone()
        return Row.decode(*found).generation if found else None

    async def offsets(self) -> Offsets:
        async with self._requests.use() as conn:
            cur = await conn.execute(
                "SELECT topic, part, next_offset FROM offsets WHERE projection = %s",
                (self._projection,),
            )
            rows = await cur.fetchall()
        return {(topic, part): offset for topic, part, offset in rows}

    # ------------------------------------------------------------ writes

    async def submit_all(
        self,
        submissions: Sequence[Submission],
        fingerprint: str,
        webhook: Subscription | None = None,
    ) -> list[tuple[Row, bool]]:
        # In id order, as `apply` locks rows: two transactions never wait on each other's
        # rows in opposite orders.
        order = sorted(range(len(submissions)), key=lambda i: submissions[i].generation.id)
        found: dict[int, tuple[Row, bool]] = {}
        async with self._requests.use() as conn:
            while True:  # until each is inserted or found (a concurrent forget may remove one)
                try:
                    async with conn.transaction():
                        for i in order:
                            found[i] = await _submit(conn, submissions[i], fingerprint, webhook)
                except _Vanished:
                    continue
                return [found[i] for i in range(len(submissions))]

    async def unsent(self, before: datetime, limit: int = 1000) -> list[str]:
        async with self._requests.use() as conn:
            cur = await conn.execute(
                "SELECT outbox FROM generations WHERE outbox IS NOT NULL AND NOT request_seen "
                "AND updated_at < %s ORDER BY updated_at LIMIT %s",
                (before, limit),
            )
            return [outbox for (outbox,) in await cur.fetchall()]

    async def page(self, query: ListQuery) -> tuple[list[Generation], bool]:
        sql, params = list_sql(query, "%s")
        async with self._requests.use() as conn:
            cur = await conn.execute(f"SELECT doc::text FROM generations {sql}", params)
            docs = [doc for (doc,) in await cur.fetchall()]
        page = [Generation.model_validate_json(doc) for doc in docs[: query.limit]]
        return page, len(docs) > query.limit

    async def queued_before(self, created: str) -> int:
        async with self._requests.use() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM generations WHERE status = 'queued' AND created_key < %s",
                (created,),
            )
            found = await cur.fetchone()
        return int(found[0]) if found else 0

    async def forget(self, *request_ids: str) -> None:
        async with self._requests.use() as conn, conn.transaction():
            for request_id in sorted(request_ids):
                cur = await conn.execute(
                    "DELETE FROM generations WHERE id = %s AND NOT request_seen", (request_id,)
                )
                if cur.rowcount:
                    await conn.execute(
                        "DELETE FROM webhook_deliveries WHERE request_id = %s", (request_id,)
                    )

    async def apply(self, events: Iterable[Event], offsets: Offsets) -> list[Generation]:
        events = list(events)
        # the records as they are where a request has no row yet
        pending, pending_moves = fold({}, events, self._deployment)
        changed: dict[str, Row] = {}
        moved: list[Transition] = []
        async with self._writer.use() as conn, conn.transaction():
            while pending:  # again only for rows a concurrent `forget` removed meanwhile
                cur = await conn.execute(
                    "INSERT INTO generations (id, doc, status, request_seen, updated_at, "
                    "requester, source, created_key) "
                    f"SELECT * FROM {_ROWS} ORDER BY 1 ON CONFLICT (id) DO NOTHING RETURNING id",
                    _columns(sorted(pending.items())),
                )
                inserted = {rid for (rid,) in await cur.fetchall()}
                changed.update((rid, pending[rid]) for rid in inserted)
                moved.extend(t for t in pending_moves if t.request_id in inserted)
                if not (rest := sorted(pending.keys() - inserted)):
                    break
                cur = await conn.execute(
                    f"SELECT id, {_COLUMNS} FROM generations WHERE id = ANY(%s) "
                    "ORDER BY id FOR UPDATE",
                    (rest,),
                )
                stored = {rid: Row.decode(*cols) for rid, *cols in await cur.fetchall()}
                updated, moves = fold(
                    stored, [e for e in events if e[0] in stored], self._deployment
                )
                moved.extend(moves)
                await conn.execute(
                    "UPDATE generations AS g SET doc = u.doc, status = u.status, "
                    "request_seen = u.seen, updated_at = u.at, "
                    "outbox = CASE WHEN u.seen THEN NULL ELSE g.outbox END, "
                    "requester = u.requester, source = u.source, created_key = u.created_key "
                    f"FROM {_ROWS} AS u (id, doc, status, seen, at, requester, source, "
                    "created_key) WHERE g.id = u.id",
                    _columns(sorted(updated.items())),
                )
                changed.update(updated)
                pending = {rid: row for rid, row in pending.items() if rid not in changed}
            if moved:
                subscribed = await hooks.subscriptions(conn, (t.request_id for t in moved))
                await hooks.enqueue(conn, deliveries_for(moved, subscribed))
            if offsets:
                parts = sorted(offsets.items())
                await conn.execute(
                    "INSERT INTO offsets (projection, topic, part, next_offset) "
                    "SELECT %s::text, * FROM unnest(%s::text[], %s::int[], %s::bigint[]) "
                    "ORDER BY 2, 3 ON CONFLICT (projection, topic, part) "
                    "DO UPDATE SET next_offset = excluded.next_offset",
                    (
                        self._projection,
                        [topic for (topic, _), _ in parts],
                        [part for (_, part), _ in parts],
                        [offset for _, offset in parts],
                    ),
                )
        return [row.generation for row in changed.values()]

    # ------------------------------------------------------------ webhooks

    async def meta(self, name: str, value: str) -> str:
        async with self._requests.use() as conn:
            return await hooks.meta(conn, name, value)

    async def claim_deliveries(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claimed]:
        async with self._hooks.use() as conn, conn.transaction():
            return await hooks.claim(conn, now, lease_until, limit)

    async def record_delivery(self, claimed: Claimed, result: Attempted) -> bool:
        async with self._hooks.use() as conn:
            return await hooks.record(conn, claimed, result)

    async def deliveries(self, request_id: str) -> list[WebhookDelivery]:
        async with self._requests.use() as conn:
            return await hooks.log(conn, request_id)


class _Vanished(Exception):
    """A row that conflicted with an insert was gone when read (a concurrent `forget`):
    the transaction is rolled back and made again."""


async def _submit(
    conn: Conn, submission: Submission, fingerprint: str, webhook: Subscription | None
) -> tuple[Row, bool]:
    """`PostgresStore.submit_all` for one request, in the caller's transaction."""
    g = submission.generation
    hook = None if webhook is None else webhook.model_dump_json()
    cur = await conn.execute(
        "INSERT INTO generations (id, doc, status, fingerprint, request_seen, "
        "updated_at, outbox, requester, source, created_key, webhook) "
        "VALUES (%s, %s, %s, %s, FALSE, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        (
            g.id,
            g.model_dump_json(),
            g.status.value,
            fingerprint,
            g.updated_at,
            submission.outbox,
            *listed_as(g),
            hook,
        ),
    )
    if cur.rowcount == 1:
        if webhook is not None and webhook.wants(g.status.value):
            await hooks.enqueue(conn, [new_delivery(webhook, g)])
        return Row(g, fingerprint, False), True
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM generations WHERE id = %s FOR UPDATE", (g.id,)
    )
    found = await cur.fetchone()
    if found is None:
        raise _Vanished(g.id)
    existing = Row.decode(*found)
    if existing.fingerprint is None:  # seen on Kafka before this retry
        await conn.execute(
            "UPDATE generations SET fingerprint = %s WHERE id = %s", (fingerprint, g.id)
        )
        await _subscribe(conn, existing.generation, webhook)
    return existing, False


async def _subscribe(conn: Conn, g: Generation, webhook: Subscription | None) -> None:
    """A subscription for a row the projection made (locked by the caller), unless it has
    one."""
    if webhook is None or await hooks.subscriptions(conn, [g.id]):
        return
    await conn.execute(
        "UPDATE generations SET webhook = %s WHERE id = %s", (webhook.model_dump_json(), g.id)
    )
    if webhook.wants(g.status.value):
        await hooks.enqueue(conn, [new_delivery(webhook, g)])


def _columns(rows: list[tuple[str, Row]]) -> tuple[list[Any], ...]:
    """The arrays `_ROWS` unnests: id, doc, status, request_seen, updated_at, and the
    listing columns (requester, source, created_key)."""
    listed = [listed_as(row.generation) for _, row in rows]
    return (
        [rid for rid, _ in rows],
        [row.generation.model_dump_json() for _, row in rows],
        [row.generation.status.value for _, row in rows],
        [row.request_seen for _, row in rows],
        [row.generation.updated_at for _, row in rows],
        [requester for requester, _, _ in listed],
        [source for _, source, _ in listed],
        [created for _, _, created in listed],
    )
