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
from datetime import UTC, datetime, timedelta, timezone
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
from listener.api.rows import Event, ListQuery, Submission, time_key
from listener.api.sqlitestore import SqliteStore
from listener.api.store import Store, open_store, submit
from listener.api.webhooks.models import EVENTS, Attempted, Claimed, Subscription
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
    assert (g.size_bytes, g.duration_s, g.seed, g.model_id) == (480_000, 30.0, 7, track.model_id)
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

    row, inserted = await submit(store, queued(rid), "fp-1", outbox_of(rid))
    assert inserted
    assert (row.fingerprint, row.request_seen, row.generation.id) == ("fp-1", False, rid)

    again, inserted = await submit(
        store, queued(rid, prompt="something else"), "fp-2", outbox_of(rid)
    )
    assert not inserted
    assert again.fingerprint == "fp-1"
    assert again.generation.prompt == "slow lofi piano"
    assert (await store.get(rid)) == row.generation


async def test_submit_of_a_request_already_read_from_kafka(store: Store) -> None:
    rid = new_id()
    await store.apply(events(request_of(rid)), {})

    row, inserted = await submit(store, queued(rid), "fp-1", outbox_of(rid))
    assert not inserted
    assert row.request_seen and row.fingerprint is None  # as it was stored
    assert row.generation.requester == "key-1"

    again, inserted = await submit(store, queued(rid), "fp-2", outbox_of(rid))
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
    await submit(store, queued(unsent), "fp-1", outbox_of(unsent))
    await submit(store, queued(sent), "fp-2", outbox_of(sent))
    await store.apply(events(request_of(sent)), {})

    await store.forget(unsent)
    await store.forget(sent)
    await store.forget(new_id())  # unknown: nothing to do

    assert await store.get(unsent) is None
    assert (await store.get(sent)) is not None
    _, inserted = await submit(store, queued(unsent), "fp-1", outbox_of(unsent))
    assert inserted


async def test_submit_all_stores_a_family_together_or_not_at_all(store: Store) -> None:
    # A request and its variations (listener.api.family): one transaction.
    ids = [new_id() for _ in range(3)]
    sub = Subscription(url="https://hooks.example/x", events=("queued",), key_id="key-1")
    family = [Submission(queued(rid), outbox_of(rid)) for rid in ids]
    stored = await store.submit_all(family, "fp-1", sub)
    assert [(row.generation.id, inserted) for row, inserted in stored] == [
        (rid, True) for rid in ids
    ]
    for rid in ids:
        assert [d.type for d in await store.deliveries(rid)] == ["generation.queued"]
    again = await store.submit_all(family, "fp-1", sub)
    assert [(row.generation.id, inserted) for row, inserted in again] == [
        (rid, False) for rid in ids
    ]
    # A failure on the third row takes back the first two.
    others = [new_id() for _ in range(3)]
    broken = queued(others[2]).model_copy(  # no time_key: listing it raises
        update={"created_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))}
    )
    subs = [Submission(queued(rid), outbox_of(rid)) for rid in others[:2]]
    with pytest.raises(OverflowError):
        await store.submit_all([*subs, Submission(broken, outbox_of(others[2]))], "fp-2")
    for rid in others:
        assert await store.get(rid) is None
    # forget takes several ids, in one transaction.
    await store.apply(events(request_of(ids[0])), {})  # read back: stays
    await store.forget(*ids)
    assert [await store.get(rid) is not None for rid in ids] == [True, False, False]


async def test_the_outbox_holds_what_was_not_read_back_from_kafka(store: Store) -> None:
    unsent, sent, young = new_id(), new_id(), new_id()
    for rid in (unsent, sent):
        await submit(store, queued(rid), "fp", outbox_of(rid))
    await store.apply(events(request_of(sent)), {})  # the projection read this one back
    later = datetime.now(UTC) + timedelta(seconds=5)
    await submit(store, queued(young), "fp", outbox_of(young))

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


async def test_a_page_of_every_requesters_completed_records(store: Store) -> None:
    """``/tracks``: with no requester, the completed records of all requesters, newest first,
    a page at a time, with no repeats and no gaps."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [new_id() for _ in range(6)]
    for n, rid in enumerate(ids):
        request = request_of(rid).model_copy(
            update={"requester": f"key-{n % 3}", "requested_at": start + timedelta(seconds=n)}
        )
        # The third never completes, the fifth fails: neither is a track.
        rest = {2: [], 4: [failure_of(rid)]}.get(n, [track_of(rid)])
        await store.apply(events(request, *rest), {})

    listed: list[str] = []
    after = None
    while True:
        query = ListQuery(requester=None, statuses=("completed",), after=after, limit=2)
        page, more = await store.page(query)
        listed += [g.id for g in page]
        assert all(g.status is Status.COMPLETED for g in page)
        if not more:
            break
        after = (time_key(page[-1].created_at), page[-1].id)
    assert listed == [ids[5], ids[3], ids[1], ids[0]]
    # A requester's own listing is unchanged: only theirs.
    own, _ = await store.page(ListQuery(requester="key-0", limit=10))
    assert [g.id for g in own] == [ids[3], ids[0]]


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
        return [(await submit(api, queued(rid), f"fp-{rid}", outbox_of(rid)))[1] for rid in ids]

    async def project_all() -> None:
        for rid in ids:
            await projector.apply(events(request_of(rid), progress_of(rid)), {})

    inserted, _ = await asyncio.gather(submit_all(), project_all())

    assert len(inserted) == len(ids)
    for rid in ids:
        row, again = await submit(replicas[2], queued(rid), f"fp-{rid}", outbox_of(rid))
        assert not again
        assert row.fingerprint == f"fp-{rid}"  # whoever came first, the submit's body is kept
        assert row.request_seen
        assert row.generation.status is Status.GENERATING
        assert row.generation.requester == "key-1"

    # Concurrent submits of one new id from every replica: exactly one inserts.
    rid = new_id()
    results = await asyncio.gather(
        *(submit(s, queued(rid), "fp", outbox_of(rid)) for s in replicas)
    )
    assert sorted(inserted for _, inserted in results) == [False, False, False, True]


# ------------------------------------------------------------------ webhooks (both stores)


def subscription(*wanted: str) -> Subscription:
    return Subscription(url="https://hooks.example/in", events=wanted, key_id="key-1")


async def types_of(store: Store, rid: str) -> list[str]:
    return [d.type for d in await store.deliveries(rid)]


def lease_window(now: datetime, seconds: float = 40) -> tuple[datetime, datetime]:
    return now, now + timedelta(seconds=seconds)


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "one-batch"])
async def test_each_subscribed_status_is_announced_once(store: Store, batched: bool) -> None:
    rid, quiet = new_id(), new_id()
    sub = subscription("queued", "generating", "completed", "failed")
    await submit(store, queued(rid), "fp", outbox_of(rid), sub)
    await submit(store, queued(quiet), "fp", outbox_of(quiet))  # no webhook
    assert await types_of(store, rid) == ["generation.queued"]  # in the submit's transaction

    later = [request_of(rid), progress_of(rid), progress_of(rid, "publishing"), track_of(rid)]
    later += [failure_of(rid), request_of(quiet), track_of(quiet)]
    if batched:
        await store.apply(events(*later), {})
    else:
        for message in later:
            await store.apply(events(message), {})
    await store.apply(events(*later), {})  # a replay announces nothing more

    # The request read back (still queued) and the late failure change no status; publishing
    # is not subscribed.
    assert await types_of(store, rid) == [
        "generation.queued",
        "generation.generating",
        "generation.completed",
    ]
    log = await store.deliveries(rid)
    assert all(d.status == "pending" and d.attempts == 0 for d in log)
    assert len({d.id for d in log}) == 3
    assert await store.deliveries(quiet) == []


async def test_deliveries_are_claimed_in_order_one_per_request(store: Store) -> None:
    a, b = new_id(), new_id()
    for rid in (a, b):
        await submit(store, queued(rid), "fp", outbox_of(rid), subscription(*EVENTS))
    now = datetime.now(UTC)
    # Not before the projection has read the requests back from Kafka.
    assert await store.claim_deliveries(*lease_window(now), 10) == []
    await store.apply(events(request_of(a), request_of(b), progress_of(a), progress_of(b)), {})

    first = await store.claim_deliveries(*lease_window(now), 10)
    assert sorted((c.request_id, c.event) for c in first) == sorted(
        [(a, "generation.queued"), (b, "generation.queued")]
    )
    assert await store.claim_deliveries(*lease_window(now), 10) == []  # leased, and heads
    for c in first:
        if c.request_id == a:
            ok = Attempted("delivered", now, None, 204)
            assert await store.record_delivery(c, ok)
    (second,) = await store.claim_deliveries(*lease_window(datetime.now(UTC)), 10)
    assert (second.request_id, second.event, second.attempts) == (a, "generation.generating", 0)
    assert Generation.model_validate_json(second.snapshot).status is Status.GENERATING


async def test_an_outcome_needs_its_lease_and_is_logged(store: Store) -> None:
    rid = new_id()
    await submit(store, queued(rid), "fp", outbox_of(rid), subscription("queued"))
    await store.apply(events(request_of(rid)), {})
    now = datetime.now(UTC)
    (held,) = await store.claim_deliveries(*lease_window(now), 5)
    expired = now + timedelta(seconds=41)
    (taken,) = await store.claim_deliveries(*lease_window(expired), 5)
    assert taken.id == held.id and taken.lease != held.lease
    retry_at = expired + timedelta(seconds=5)
    result = Attempted("pending", expired, retry_at, 503, "answered HTTP 503")
    assert not await store.record_delivery(held, result)  # its lease was taken
    assert await store.record_delivery(taken, result)
    (d,) = await store.deliveries(rid)
    assert (d.status, d.attempts, d.last_http_status, d.last_error) == (
        "pending",
        1,
        503,
        "answered HTTP 503",
    )
    assert d.next_attempt_at == retry_at
    assert await store.claim_deliveries(*lease_window(expired), 5) == []  # not due yet
    (again,) = await store.claim_deliveries(*lease_window(retry_at), 5)
    assert again.attempts == 1
    assert await store.record_delivery(again, Attempted("failed", retry_at, None, 500, "HTTP"))
    (d,) = await store.deliveries(rid)
    assert (d.status, d.attempts, d.next_attempt_at) == ("failed", 2, None)
    assert await store.claim_deliveries(*lease_window(retry_at + timedelta(days=9)), 5) == []


async def test_meta_keeps_the_first_value(open_: OpenStore) -> None:
    one, two = await open_(), await open_()
    assert await one.meta("webhook_master", "first") == "first"
    assert await two.meta("webhook_master", "second") == "first"
    assert await two.meta("other", "x") == "x"


async def test_forget_drops_the_deliveries_too(store: Store) -> None:
    rid = new_id()
    await submit(store, queued(rid), "fp", outbox_of(rid), subscription("queued"))
    await store.forget(rid)
    assert await store.deliveries(rid) == []
    await submit(store, queued(rid), "fp", outbox_of(rid), subscription("queued"))
    assert await types_of(store, rid) == ["generation.queued"]


async def test_a_request_stored_by_the_projection_first_gets_the_subscription(
    store: Store,
) -> None:
    rid = new_id()
    await store.apply(events(request_of(rid), progress_of(rid)), {})
    _, inserted = await submit(store, queued(rid), "fp", outbox_of(rid), subscription(*EVENTS))
    assert not inserted
    # Its current status is announced, and what follows.
    await submit(store, queued(rid), "fp", outbox_of(rid), subscription(*EVENTS))
    await store.apply(events(track_of(rid)), {})
    assert await types_of(store, rid) == ["generation.generating", "generation.completed"]


# ------------------------------------------------------------------ webhooks (replicas)


async def test_replicas_announce_each_transition_once(replicas: list[PostgresStore]) -> None:
    ids = [new_id() for _ in range(20)]
    for rid in ids:
        await submit(replicas[0], queued(rid), "fp", outbox_of(rid), subscription(*EVENTS))
    records = [
        e
        for rid in ids
        for e in events(request_of(rid), progress_of(rid), progress_of(rid, "publishing"))
    ] + [e for rid in ids for e in events(track_of(rid))]

    async def project(store: PostgresStore, size: int) -> None:
        for start in range(0, len(records), size):
            await store.apply(records[start : start + size], {})

    await asyncio.gather(*(project(s, n) for s, n in zip(replicas, (3, 8, 17, 80), strict=True)))
    for rid in ids:
        assert await types_of(replicas[1], rid) == [
            "generation.queued",
            "generation.generating",
            "generation.publishing",
            "generation.completed",
        ]


async def test_replicas_claiming_at_once_never_share_a_delivery(
    replicas: list[PostgresStore],
) -> None:
    ids = [new_id() for _ in range(30)]
    for rid in ids:
        await submit(replicas[0], queued(rid), "fp", outbox_of(rid), subscription(*EVENTS))
    await replicas[0].apply(
        [e for rid in ids for e in events(request_of(rid), progress_of(rid))], {}
    )
    now = datetime.now(UTC)

    async def claim_all(store: PostgresStore) -> list[Claimed]:
        got: list[Claimed] = []
        while batch := await store.claim_deliveries(*lease_window(now), 4):
            got.extend(batch)
        return got

    rounds = []
    for _ in range(2):
        claimed = [c for got in await asyncio.gather(*map(claim_all, replicas)) for c in got]
        assert len(claimed) == len({c.id for c in claimed}) == len(ids)  # heads only, once
        assert len({c.request_id for c in claimed}) == len(ids)
        rounds.append({c.event for c in claimed})
        for c in claimed:
            assert await replicas[0].record_delivery(c, Attempted("delivered", now, None, 200))
    assert rounds == [{"generation.queued"}, {"generation.generating"}]
