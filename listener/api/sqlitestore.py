"""The status store in SQLite (embedded, WAL): one API process (see `listener.api.store`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from listener.api.family import Deployment
from listener.api.models import Generation
from listener.api.rows import (
    Event,
    ListQuery,
    Offsets,
    Row,
    Submission,
    fold,
    list_sql,
    listed_as,
)
from listener.api.webhooks import sqlite as hooks
from listener.api.webhooks.models import (
    Attempted,
    Claimed,
    Subscription,
    WebhookDelivery,
    deliveries_for,
    new_delivery,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")


SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT,
    request_seen INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    outbox TEXT,
    requester TEXT,
    source TEXT,
    created_key TEXT
);
CREATE TABLE IF NOT EXISTS offsets (
    projection TEXT NOT NULL,
    topic TEXT NOT NULL,
    part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (projection, topic, part)
);
"""


class SqliteStore:
    """SQLite in WAL mode, used from one thread so the event loop never blocks on disk."""

    def __init__(
        self, path: Path | str, projection: str = "api", deployment: Deployment | None = None
    ) -> None:
        self._path = str(path)
        self._projection = projection
        self._deployment = deployment
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> SqliteStore:
        def _open() -> None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            db.executescript(hooks.SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(generations)")}
            for added in ("outbox", "requester", "source", "created_key", "webhook"):
                if added not in columns:  # a store made before the column
                    db.execute(f"ALTER TABLE generations ADD COLUMN {added} TEXT")
            _fill_listing_columns(db)
            db.execute(
                "CREATE INDEX IF NOT EXISTS generations_unsent ON generations (updated_at) "
                "WHERE outbox IS NOT NULL"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS generations_queued ON generations (created_key) "
                "WHERE status = 'queued'"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS generations_by_requester "
                "ON generations (requester, created_key, id)"
            )
            db.execute(  # /tracks: the completed records of every requester, newest first
                "CREATE INDEX IF NOT EXISTS generations_completed ON generations "
                "(created_key, id) WHERE status = 'completed'"
            )
            self._db = db

        await self._run(_open)
        return self

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the status store is not open")
        return self._db

    # ------------------------------------------------------------ reads

    def _row(self, request_id: str) -> Row | None:
        found = self.db.execute(
            "SELECT doc, fingerprint, request_seen FROM generations WHERE id = ?", (request_id,)
        ).fetchone()
        return None if found is None else Row.decode(*found)

    async def get(self, request_id: str) -> Generation | None:
        row = await self._run(lambda: self._row(request_id))
        return row.generation if row else None

    async def offsets(self) -> Offsets:
        rows = await self._run(
            lambda: self.db.execute(
                "SELECT topic, part, next_offset FROM offsets WHERE projection = ?",
                (self._projection,),
            ).fetchall()
        )
        return {(topic, part): offset for topic, part, offset in rows}

    # ------------------------------------------------------------ writes

    def _write(self, g: Generation, fingerprint: str | None, seen: bool) -> None:
        self.db.execute(
            "INSERT INTO generations (id, doc, status, fingerprint, request_seen, updated_at, "
            "requester, source, created_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, "
            "status = excluded.status, request_seen = MAX(request_seen, excluded.request_seen), "
            "fingerprint = COALESCE(fingerprint, excluded.fingerprint), "
            "outbox = CASE WHEN excluded.request_seen = 1 THEN NULL ELSE outbox END, "
            "updated_at = excluded.updated_at, requester = excluded.requester, "
            "source = excluded.source, created_key = excluded.created_key",
            (
                g.id,
                g.model_dump_json(),
                g.status.value,
                fingerprint,
                int(seen),
                _iso(g),
                *listed_as(g),
            ),
        )

    async def submit_all(
        self,
        submissions: Sequence[Submission],
        fingerprint: str,
        webhook: Subscription | None = None,
    ) -> list[tuple[Row, bool]]:
        def _submit() -> list[tuple[Row, bool]]:
            with _transaction(self.db):
                return [self._submit(s, fingerprint, webhook) for s in submissions]

        return await self._run(_submit)

    def _submit(
        self, submission: Submission, fingerprint: str, webhook: Subscription | None
    ) -> tuple[Row, bool]:
        generation = submission.generation
        existing = self._row(generation.id)
        if existing is not None:
            if existing.fingerprint is None:  # seen on Kafka before this retry
                self._write(existing.generation, fingerprint, existing.request_seen)
                self._subscribe(existing.generation, webhook)
            return existing, False
        self._write(generation, fingerprint, False)
        self.db.execute(
            "UPDATE generations SET outbox = ?, webhook = ? WHERE id = ?",
            (
                submission.outbox,
                None if webhook is None else webhook.model_dump_json(),
                generation.id,
            ),
        )
        if webhook is not None and webhook.wants(generation.status.value):
            hooks.enqueue(self.db, [new_delivery(webhook, generation)])
        return Row(generation, fingerprint, False), True

    def _subscribe(self, g: Generation, webhook: Subscription | None) -> None:
        """A subscription for a row the projection made, unless it has one."""
        if webhook is None or hooks.subscriptions(self.db, [g.id]):
            return
        self.db.execute(
            "UPDATE generations SET webhook = ? WHERE id = ?", (webhook.model_dump_json(), g.id)
        )
        if webhook.wants(g.status.value):
            hooks.enqueue(self.db, [new_delivery(webhook, g)])

    async def unsent(self, before: datetime, limit: int = 1000) -> list[str]:
        cutoff = before.astimezone(UTC).isoformat()

        def _unsent() -> list[str]:
            rows = self.db.execute(
                "SELECT outbox FROM generations WHERE outbox IS NOT NULL AND request_seen = 0 "
                "AND updated_at < ? ORDER BY updated_at LIMIT ?",
                (cutoff, limit),
            ).fetchall()
            return [outbox for (outbox,) in rows]

        return await self._run(_unsent)

    async def page(self, query: ListQuery) -> tuple[list[Generation], bool]:
        sql, params = list_sql(query, "?")

        def _list() -> list[str]:
            return [doc for (doc,) in self.db.execute(f"SELECT doc FROM generations {sql}", params)]

        docs = await self._run(_list)
        page = [Generation.model_validate_json(doc) for doc in docs[: query.limit]]
        return page, len(docs) > query.limit

    async def queued_before(self, created: str) -> int:
        def _count() -> int:
            (n,) = self.db.execute(
                "SELECT count(*) FROM generations WHERE status = 'queued' AND created_key < ?",
                (created,),
            ).fetchone()
            return int(n)

        return await self._run(_count)

    async def forget(self, *request_ids: str) -> None:
        def _forget() -> None:
            with _transaction(self.db):
                for request_id in request_ids:
                    cur = self.db.execute(
                        "DELETE FROM generations WHERE id = ? AND request_seen = 0",
                        (request_id,),
                    )
                    if cur.rowcount:
                        self.db.execute(
                            "DELETE FROM webhook_deliveries WHERE request_id = ?", (request_id,)
                        )

        await self._run(_forget)

    async def apply(self, events: Iterable[Event], offsets: Offsets) -> list[Generation]:
        events = list(events)

        def _apply() -> list[Generation]:
            with _transaction(self.db):
                changed, moved = fold(
                    {rid: self._row(rid) for rid in {r for r, _ in events}},
                    events,
                    self._deployment,
                )
                for row in changed.values():
                    self._write(row.generation, None, row.request_seen)
                subscribed = hooks.subscriptions(self.db, (t.request_id for t in moved))
                hooks.enqueue(self.db, deliveries_for(moved, subscribed))
                for (topic, part), offset in offsets.items():
                    self.db.execute(
                        "INSERT INTO offsets (projection, topic, part, next_offset) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (projection, topic, part) "
                        "DO UPDATE SET next_offset = excluded.next_offset",
                        (self._projection, topic, part, offset),
                    )
            return [row.generation for row in changed.values()]

        return await self._run(_apply)

    # ------------------------------------------------------------ webhooks

    async def meta(self, name: str, value: str) -> str:
        return await self._run(lambda: hooks.meta(self.db, name, value))

    async def claim_deliveries(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claimed]:
        def _claim() -> list[Claimed]:
            with _transaction(self.db):
                return hooks.claim(self.db, now, lease_until, limit)

        return await self._run(_claim)

    async def record_delivery(self, claimed: Claimed, result: Attempted) -> bool:
        return await self._run(lambda: hooks.record(self.db, claimed, result))

    async def deliveries(self, request_id: str) -> list[WebhookDelivery]:
        return await self._run(lambda: hooks.log(self.db, request_id))


def _fill_listing_columns(db: sqlite3.Connection) -> None:
    """Rows written before the listing columns get them, from their record."""
    rows = db.execute("SELECT id, doc FROM generations WHERE created_key IS NULL").fetchall()
    for rid, doc in rows:
        db.execute(
            "UPDATE generations SET requester = ?, source = ?, created_key = ? WHERE id = ?",
            (*listed_as(Generation.model_validate_json(doc)), rid),
        )


def _iso(g: Generation) -> str:
    return g.updated_at.astimezone(UTC).isoformat()


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
