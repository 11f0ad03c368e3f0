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
  same transaction as the records it covers, so a restart neither loses nor re-counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from listener.api.models import Generation
from listener.api.rows import Event, ListQuery, Offsets, Row

__all__ = ["Store", "open_store"]


class Store(Protocol):
    async def get(self, request_id: str) -> Generation | None: ...

    async def submit(
        self, generation: Generation, fingerprint: str, outbox: str
    ) -> tuple[Row, bool]:
        """Insert an HTTP request unless its id exists, with ``outbox`` (its request record's
        JSON); (the row, whether it was inserted)."""
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

    async def forget(self, request_id: str) -> None:
        """Remove a submitted request that never reached Kafka."""
        ...

    async def apply(self, events: Iterable[Event], offsets: Offsets) -> list[Generation]:
        """Fold events into their records and move the offsets, atomically; the changed."""
        ...

    async def offsets(self) -> Offsets: ...

    async def close(self) -> None: ...


async def open_store(url: str) -> Store:
    """The store at ``url``: ``sqlite:///PATH`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        from listener.api.sqlitestore import SqliteStore

        return await SqliteStore(url.removeprefix("sqlite:///")).open()
    from listener.api.pgstore import PostgresStore  # psycopg: the optional postgres extra

    return await PostgresStore(url).open()
