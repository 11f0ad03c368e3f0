"""The webhook tables of the SQLite status store (`listener.api.sqlitestore`), as functions
of its connection; the store calls them on its thread, inside its transactions.

Times are `listener.api.rows.time_key` text (fixed-width UTC), so text order is time order.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from datetime import datetime

from listener.api.rows import time_key
from listener.api.webhooks.models import (
    Attempted,
    Claimed,
    NewDelivery,
    Subscription,
    WebhookDelivery,
)

__all__ = ["SCHEMA", "claim", "enqueue", "log", "meta", "record", "subscriptions"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TEXT,
    lease TEXT,
    leased_until TEXT,
    last_status INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (request_id, seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at)
    WHERE state = 'pending';
"""


def meta(db: sqlite3.Connection, name: str, value: str) -> str:
    db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, value))
    (stored,) = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return str(stored)


def subscriptions(db: sqlite3.Connection, ids: Iterable[str]) -> dict[str, Subscription]:
    """The subscriptions of those of ``ids`` that have one."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = db.execute(
        f"SELECT id, webhook FROM generations WHERE id IN ({', '.join('?' * len(ids))}) "
        "AND webhook IS NOT NULL",
        ids,
    ).fetchall()
    return {rid: Subscription.model_validate_json(doc) for rid, doc in rows}


def enqueue(db: sqlite3.Connection, deliveries: Iterable[NewDelivery]) -> None:
    """Store ``deliveries``, due at once, each after its request's earlier ones."""
    for d in deliveries:
        at = time_key(d.created_at)
        db.execute(
            "INSERT INTO webhook_deliveries (id, request_id, seq, key_id, url, event, snapshot, "
            "next_at, created_at, updated_at) VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 "
            "FROM webhook_deliveries WHERE request_id = ?), ?, ?, ?, ?, ?, ?, ?)",
            (d.id, d.request_id, d.request_id, d.key_id, d.url, d.event, d.snapshot, at, at, at),
        )


def claim(
    db: sqlite3.Connection, now: datetime, lease_until: datetime, limit: int
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, each the first pending one of its request, of
    requests whose record the projection has read back from Kafka."""
    at = time_key(now)
    rows = db.execute(
        "SELECT d.id, d.request_id, d.key_id, d.url, d.event, d.snapshot, d.created_at, "
        "d.attempts FROM webhook_deliveries d JOIN generations g ON g.id = d.request_id "
        "WHERE d.state = 'pending' AND d.next_at <= ? "
        "AND (d.leased_until IS NULL OR d.leased_until <= ?) AND g.request_seen = 1 "
        "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.request_id = d.request_id "
        "AND e.state = 'pending' AND e.seq < d.seq) "
        "ORDER BY d.next_at, d.request_id, d.seq LIMIT ?",
        (at, at, limit),
    ).fetchall()
    lease = uuid.uuid4().hex
    claimed = []
    for rid, request_id, key_id, url, event, snapshot, created, attempts in rows:
        db.execute(
            "UPDATE webhook_deliveries SET lease = ?, leased_until = ? WHERE id = ?",
            (lease, time_key(lease_until), rid),
        )
        claimed.append(
            Claimed(
                id=rid,
                request_id=request_id,
                key_id=key_id,
                url=url,
                event=event,
                snapshot=snapshot,
                created_at=datetime.fromisoformat(created),
                attempts=attempts,
                lease=lease,
            )
        )
    return claimed


def record(db: sqlite3.Connection, claimed: Claimed, result: Attempted) -> bool:
    """Write an attempt's outcome, unless the lease was lost meanwhile; whether written."""
    cur = db.execute(
        "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_at = ?, "
        "lease = NULL, leased_until = NULL, last_status = ?, last_error = ?, updated_at = ? "
        "WHERE id = ? AND lease = ?",
        (
            result.state,
            None if result.next_at is None else time_key(result.next_at),
            result.http_status,
            result.error,
            time_key(result.at),
            claimed.id,
            claimed.lease,
        ),
    )
    return cur.rowcount == 1


def log(db: sqlite3.Connection, request_id: str) -> list[WebhookDelivery]:
    rows = db.execute(
        "SELECT id, event, state, attempts, next_at, last_status, last_error, created_at, "
        "updated_at FROM webhook_deliveries WHERE request_id = ? ORDER BY seq",
        (request_id,),
    ).fetchall()
    return [
        WebhookDelivery(
            id=rid,
            type=event,
            status=state,
            attempts=attempts,
            next_attempt_at=datetime.fromisoformat(next_at) if state == "pending" else None,
            last_http_status=last_status,
            last_error=last_error,
            created_at=datetime.fromisoformat(created),
            updated_at=datetime.fromisoformat(updated),
        )
        for rid, event, state, attempts, next_at, last_status, last_error, created, updated in rows
    ]
