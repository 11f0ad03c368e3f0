"""The webhook tables of the PostgreSQL status store (`listener.api.pgstore`), as functions
of one of its connections, inside its transactions.

Several replicas run a deliverer on one database: `claim` takes due deliveries with ``FOR
UPDATE SKIP LOCKED`` and leases them (a token and a time), so each delivery is attempted by
one replica at a time; a replica that dies mid-attempt leaves a lease that runs out, and
another takes the delivery then. An outcome is written only under the lease it was sent with.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow

from listener.api.webhooks.models import (
    Attempted,
    Claimed,
    NewDelivery,
    Subscription,
    WebhookDelivery,
)

__all__ = ["SCHEMA", "claim", "enqueue", "log", "meta", "record", "subscriptions"]

Conn = psycopg.AsyncConnection[TupleRow]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    "ALTER TABLE generations ADD COLUMN IF NOT EXISTS webhook TEXT",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        url TEXT NOT NULL,
        event TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TIMESTAMPTZ,
        lease TEXT,
        leased_until TIMESTAMPTZ,
        last_status INTEGER,
        last_error TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        UNIQUE (request_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at) "
    "WHERE state = 'pending'",
)


async def meta(conn: Conn, name: str, value: str) -> str:
    await conn.execute(
        "INSERT INTO meta (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, value)
    )
    cur = await conn.execute("SELECT value FROM meta WHERE name = %s", (name,))
    found = await cur.fetchone()
    assert found is not None
    return str(found[0])


async def subscriptions(conn: Conn, ids: Iterable[str]) -> dict[str, Subscription]:
    """The subscriptions of those of ``ids`` that have one."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    cur = await conn.execute(
        "SELECT id, webhook FROM generations WHERE id = ANY(%s) AND webhook IS NOT NULL", (ids,)
    )
    return {rid: Subscription.model_validate_json(doc) for rid, doc in await cur.fetchall()}


async def enqueue(conn: Conn, deliveries: Iterable[NewDelivery]) -> None:
    """Store ``deliveries``, due at once, each after its request's earlier ones (the callers
    hold the request's row lock, so no other transaction numbers its deliveries meanwhile)."""
    for d in deliveries:
        await conn.execute(
            "INSERT INTO webhook_deliveries (id, request_id, seq, key_id, url, event, snapshot, "
            "next_at, created_at, updated_at) VALUES (%(id)s, %(rid)s, (SELECT COALESCE(MAX(seq), "
            "0) + 1 FROM webhook_deliveries WHERE request_id = %(rid)s), %(key)s, %(url)s, "
            "%(event)s, %(snapshot)s, %(at)s, %(at)s, %(at)s)",
            {
                "id": d.id,
                "rid": d.request_id,
                "key": d.key_id,
                "url": d.url,
                "event": d.event,
                "snapshot": d.snapshot,
                "at": d.created_at,
            },
        )


async def claim(conn: Conn, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, each the first pending one of its request, of
    requests whose record the projection has read back from Kafka; rows another replica is
    claiming are skipped, not waited for."""
    lease = uuid.uuid4().hex
    cur = await conn.execute(
        "WITH due AS (SELECT d.id FROM webhook_deliveries d "
        "JOIN generations g ON g.id = d.request_id "
        "WHERE d.state = 'pending' AND d.next_at <= %(now)s "
        "AND (d.leased_until IS NULL OR d.leased_until <= %(now)s) AND g.request_seen "
        "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.request_id = d.request_id "
        "AND e.state = 'pending' AND e.seq < d.seq) "
        "ORDER BY d.next_at, d.request_id, d.seq LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED) "
        "UPDATE webhook_deliveries w SET lease = %(lease)s, leased_until = %(until)s "
        "FROM due WHERE w.id = due.id RETURNING w.id, w.request_id, w.key_id, w.url, w.event, "
        "w.snapshot, w.created_at, w.attempts, w.next_at",
        {"now": now, "limit": limit, "lease": lease, "until": lease_until},
    )
    rows = sorted(await cur.fetchall(), key=lambda r: (r[8], r[1]))
    return [
        Claimed(
            id=rid,
            request_id=request_id,
            key_id=key_id,
            url=url,
            event=event,
            snapshot=snapshot,
            created_at=created,
            attempts=attempts,
            lease=lease,
        )
        for rid, request_id, key_id, url, event, snapshot, created, attempts, _ in rows
    ]


async def record(conn: Conn, claimed: Claimed, result: Attempted) -> bool:
    """Write an attempt's outcome, unless the lease was lost meanwhile; whether written."""
    cur = await conn.execute(
        "UPDATE webhook_deliveries SET state = %s, attempts = attempts + 1, next_at = %s, "
        "lease = NULL, leased_until = NULL, last_status = %s, last_error = %s, updated_at = %s "
        "WHERE id = %s AND lease = %s",
        (
            result.state,
            result.next_at,
            result.http_status,
            result.error,
            result.at,
            claimed.id,
            claimed.lease,
        ),
    )
    return cur.rowcount == 1


async def log(conn: Conn, request_id: str) -> list[WebhookDelivery]:
    cur = await conn.execute(
        "SELECT id, event, state, attempts, next_at, last_status, last_error, created_at, "
        "updated_at FROM webhook_deliveries WHERE request_id = %s ORDER BY seq",
        (request_id,),
    )
    return [
        WebhookDelivery(
            id=rid,
            type=event,
            status=state,
            attempts=attempts,
            next_attempt_at=next_at if state == "pending" else None,
            last_http_status=last_status,
            last_error=last_error,
            created_at=created,
            updated_at=updated,
        )
        for rid, event, state, attempts, next_at, last_status, last_error, created, updated in (
            await cur.fetchall()
        )
    ]
