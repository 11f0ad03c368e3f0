"""The API's status stores, SQLite and PostgreSQL, against the same expectations.

SQLite runs in the test's tmp_path. PostgreSQL is the stack's (``scripts/stack up`` starts
it and writes ``ACESTEPS_TEST_POSTGRES_URL`` to ``.cache/run/stack.env``); every test gets a
database of its own, dropped afterwards. Without that URL, or with the server down, the
PostgreSQL cases fail and say so; they are never skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from acesteps.messages import (
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    Message,
    TrackPublished,
)
from listener.api.models import Generation, Status
from listener.api.pgstore import PostgresStore
from listener.api.rows import Event
from listener.api.sqlitestore import SqliteStore
from listener.api.store import Store, open_store
from tests.factories import track_published
from tests.integration.pgdb import fresh_database

TOPIC = "t.requests.v1"

OpenStore = Callable[..., Awaitable[Store]]


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh database on the test PostgreSQL, dropped after the test."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's stores live: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'status.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def open_(database: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's database (one per replica); closes them afterwards."""
    opened: list[Store] = []

    async def open_store_(projection: str = "api") -> Store:
        store: Store
        if database.startswith("sqlite:///"):
            store = await SqliteStore(database.removeprefix("sqlite:///"), projection).open()
        else:
            store = await PostgresStore(database, projection).open()
        opened.append(store)
        return store

    yield open_store_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_: OpenStore) -> Store:
    return await open_()


# ------------------------------------------------------------------ messages


def new_id() -> str:
    return "0x" + uuid.uuid4().hex + uuid.uuid4().hex


def request_of(rid: str) -> GenerationRequest:
    return GenerationRequest(
        request_id=rid,
        source="http",
        prompt="slow lofi piano",
        tags=("lofi", "piano"),
        duration_s=30,
        seed=7,
        requester="key-1",
    )


def progress_of(rid: str, stage: str = "generating") -> GenerationProgress:
    return GenerationProgress(request_id=rid, stage=stage, worker="generator-0")  # type: ignore[arg-type]


def track_of(rid: str) -> TrackPublished:
    return track_published(rid)


def failure_of(rid: str) -> GenerationFailed:
    return GenerationFailed(request_id=rid, stage="publisher", code="late", message="too late")


def queued(rid: str, prompt: str = "slow lofi piano") -> Generation:
    return Generation(id=rid, status=Status.QUEUED, source="http", prompt=prompt, duration_s=30)


def outbox_of(rid: str) -> str:
    return request_of(rid).model_dump_json()


def events(*messages: Message) -> list[Event]:
    return [(str(m.request_id), m) for m in messages]  # type: ignore[attr-defined]


def assert_completed(g: Generation | None, rid: str) -> None:
    track = track_of(rid)
    assert g is not None
    assert g.status is Status.COMPLETED
    assert (g.cid, g.audio_hash, g.tx_hash) == (track.cid, track.audio_hash, track.tx_hash)
    assert g.ipfs_urls == list(track.urls)
    assert g.block_number == 42
    assert (g.chain_id, g.contract) == (31337, track.contract)
    assert (g.size_bytes, g.duration_s, g.seed, g.model) == (480_000, 30.0, 7, track.model_id)
    assert (g.prompt, g.tags, g.requester, g.source) == (
        "slow lofi piano",
        ("lofi", "piano"),
        "key-1",
        "http",
    )
    assert g.error is None


# ------------------------------------------------------------------ both stores


async def test_submit_is_idempotent_and_keeps_the_first_fingerprint(store: Store) -> None:
    rid = new_id()

    row, inserted = await store.submit(queued(rid), "fp-1", outbox_of(rid))
    assert inserted
    assert (row.fingerprint, row.request_seen, row.generation.id) == ("fp-1", False, rid)

    again, inserted = await store.submit(
        queued(rid, prompt="something else"), "fp-2", outbox_of(rid)
    )
    assert not inserted
    assert again.fingerprint == "fp-1"
    assert again.generation.prompt == "slow lofi piano"
    assert (await store.get(rid)) == row.generation


async def test_submit_of_a_request_already_read_from_kafka(store: Store) -> None:
    rid = new_id()
    await store.apply(events(request_of(rid)), {})

    row, inserted = await store.submit(queued(rid), "fp-1", outbox_of(rid))
    assert not inserted
    assert row.request_seen and row.fingerprint is None  # as it was stored
    assert row.generation.requester == "key-1"

    again, inserted = await store.submit(queued(rid), "fp-2", outbox_of(rid))
    assert not inserted
    assert again.fingerprint == "fp-1"  # the first retry's body is the one kept


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "one-batch"])
async def test_apply_folds_a_request_to_completed(store: Store, batched: bool) -> None:
    rid, other = new_id(), new_id()
    sequence = [request_of(rid), progress_of(rid), track_of(rid), failure_of(rid)]

    if batched:
        changed = await store.apply(events(*sequence), {(TOPIC, 0): 4})
        assert [g.id for g in changed] == [rid]
    else:
        statuses = []
        for offset, message in enumerate(sequence, start=1):
            changed = await store.apply(events(message), {(TOPIC, 0): offset})
            assert [g.id for g in changed] == [rid]
            statuses.append(changed[0].status)
        assert statuses == [Status.QUEUED, Status.GENERATING, Status.COMPLETED, Status.COMPLETED]

    assert_completed(await store.get(rid), rid)
    assert await store.get(other) is None
    assert await store.offsets() == {(TOPIC, 0): 4}


async def test_a_final_status_never_moves(store: Store) -> None:
    rid = new_id()
    await store.apply(events(request_of(rid), track_of(rid)), {})
    await store.apply(events(failure_of(rid), progress_of(rid, "publishing")), {})
    await store.apply(events(request_of(rid)), {})  # a replay of the request
    assert_completed(await store.get(rid), rid)


async def test_a_late_request_keeps_the_tracks_chain_fields(store: Store) -> None:
    rid = new_id()
    await store.apply(events(track_of(rid)), {})
    await store.apply(events(request_of(rid)), {})
    assert_completed(await store.get(rid), rid)


async def test_offsets_are_stored_per_projection(open_: OpenStore) -> None:
    api, other = await open_("api"), await open_("other")
    assert await api.offsets() == {}

    await api.apply([], {(TOPIC, 0): 3, (TOPIC, 1): 7, ("t.tracks.v1", 0): 1})
    await api.apply([], {(TOPIC, 1): 9})

    assert await api.offsets() == {(TOPIC, 0): 3, (TOPIC, 1): 9, ("t.tracks.v1", 0): 1}
    assert await other.offsets() == {}


async def test_forget_removes_only_requests_not_seen_on_kafka(store: Store) -> None:
    unsent, sent = new_id(), new_id()
    await store.submit(queued(unsent), "fp-1", outbox_of(unsent))
    await store.submit(queued(sent), "fp-2", outbox_of(sent))
    await store.apply(events(request_of(sent)), {})

    await store.forget(unsent)
    await store.forget(sent)
    await store.forget(new_id())  # unknown: nothing to do

    assert await store.get(unsent) is None
    assert (await store.get(sent)) is not None
    _, inserted = await store.submit(queued(unsent), "fp-1", outbox_of(unsent))
    assert inserted


async def test_the_outbox_holds_what_was_not_read_back_from_kafka(store: Store) -> None:
    unsent, sent, young = new_id(), new_id(), new_id()
    for rid in (unsent, sent):
        await store.submit(queued(rid), "fp", outbox_of(rid))
    await store.apply(events(request_of(sent)), {})  # the projection read this one back
    later = datetime.now(UTC) + timedelta(seconds=5)
    await store.submit(queued(young), "fp", outbox_of(young))

    found = await store.unsent(later)
    assert [GenerationRequest.model_validate_json(doc).request_id for doc in found] == [
        unsent,
        young,
    ]
    first = GenerationRequest.model_validate_json(found[0])
    assert (first.prompt, first.tags, first.seed) == ("slow lofi piano", ("lofi", "piano"), 7)
    # Only what is older than the cutoff, and a progress event does not clear it.
    assert await store.unsent(datetime.now(UTC) - timedelta(hours=1)) == []
    await store.apply(events(progress_of(unsent)), {})
    assert len(await store.unsent(later + timedelta(seconds=5))) == 2
    await store.apply(events(request_of(unsent), request_of(young)), {})
    assert await store.unsent(later + timedelta(seconds=5)) == []


async def test_open_store_picks_the_store_by_url(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'status.sqlite3'}")
    try:
        assert isinstance(store, SqliteStore)
    finally:
        await store.close()


# ------------------------------------------------------------------ replicas (PostgreSQL)


async def test_open_store_opens_postgres(pg_url: str) -> None:
    store = await open_store(pg_url)
    try:
        assert isinstance(store, PostgresStore)
        assert await store.offsets() == {}
    finally:
        await store.close()


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Four API replicas on one database, opened together (the schema is created once)."""
    stores = await asyncio.gather(*(PostgresStore(pg_url).open() for _ in range(4)))
    yield list(stores)
    for store in stores:
        await store.close()


async def test_replicas_applying_the_same_records_converge(replicas: list[PostgresStore]) -> None:
    ids = [new_id() for _ in range(40)]
    records = [
        event
        for rid in ids
        for event in events(request_of(rid), progress_of(rid), track_of(rid), failure_of(rid))
    ]
    # As from the four topics read side by side: progress hints may come before the request.
    order = [GenerationProgress, GenerationRequest, TrackPublished, GenerationFailed]
    records.sort(key=lambda e: order.index(type(e[1])))

    async def project(store: PostgresStore, batch_size: int) -> None:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            await store.apply(batch, {(TOPIC, 0): start + len(batch)})

    # Every replica reads everything, each in batches of its own size.
    await asyncio.gather(*(project(s, n) for s, n in zip(replicas, (7, 16, 33, 160), strict=True)))

    for rid in ids:
        seen = [await store.get(rid) for store in replicas]
        assert_completed(seen[0], rid)
        assert all(g == seen[0] for g in seen)  # one row, whoever reads it
    assert await replicas[0].offsets() == {(TOPIC, 0): len(records)}

    # A replica far behind replays the start: nothing moves back.
    await replicas[1].apply(records[:80], {(TOPIC, 0): 80})
    for rid in ids:
        assert_completed(await replicas[2].get(rid), rid)


async def test_replicas_applying_different_records_at_once_merge_them(
    replicas: list[PostgresStore],
) -> None:
    """No update is lost: each replica brings fields of its own to the same rows."""
    for _ in range(3):
        ids = [new_id() for _ in range(25)]
        kinds = (request_of, progress_of, track_of)
        await asyncio.gather(
            *(
                store.apply([event for rid in ids for event in events(kind(rid))], {})
                for store, kind in zip(replicas, kinds, strict=False)
            )
        )
        for rid in ids:
            # prompt and requester come from the request only, the track fields from the track
            assert_completed(await replicas[3].get(rid), rid)


async def test_submit_racing_the_projection_keeps_both(replicas: list[PostgresStore]) -> None:
    ids = [new_id() for _ in range(30)]
    api, projector = replicas[0], replicas[1]

    async def submit_all() -> list[bool]:
        return [(await api.submit(queued(rid), f"fp-{rid}", outbox_of(rid)))[1] for rid in ids]

    async def project_all() -> None:
        for rid in ids:
            await projector.apply(events(request_of(rid), progress_of(rid)), {})

    inserted, _ = await asyncio.gather(submit_all(), project_all())

    assert len(inserted) == len(ids)
    for rid in ids:
        row, again = await replicas[2].submit(queued(rid), f"fp-{rid}", outbox_of(rid))
        assert not again
        assert row.fingerprint == f"fp-{rid}"  # whoever came first, the submit's body is kept
        assert row.request_seen
        assert row.generation.status is Status.GENERATING
        assert row.generation.requester == "key-1"

    # Concurrent submits of one new id from every replica: exactly one inserts.
    rid = new_id()
    results = await asyncio.gather(*(s.submit(queued(rid), "fp", outbox_of(rid)) for s in replicas))
    assert sorted(inserted for _, inserted in results) == [False, False, False, True]
