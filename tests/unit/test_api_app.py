"""The API's HTTP behaviour in-process: keys, rate limits, idempotency, validation, errors.

A real `SqliteStore` and `Hub`; the Kafka producer, IPFS and the chain are fakes passed in
(`tests.unit.apiapp`; the integration tests in tests/integration/test_api.py run the real ones).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from acesteps.hashing import keccak256_hex
from acesteps.messages import (
    ChainOrigin,
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
)
from acesteps.types import AUDIO_FORMATS
from listener.api.audiocache import AudioCache
from listener.api.auth import ApiKeys, RateLimiter
from listener.api.verdicts import verdict_schema
from tests.factories import track_published
from tests.unit.apiapp import BODY, CONTRACT, KEYS, bearer


async def test_submit_answers_202_with_location_and_queues_one_request(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    answer = await client.post("/api/generate", json={**BODY, "tags": ["piano"], "seed": 3})
    body = await answer.json()
    assert answer.status == 202, body
    assert answer.headers["Location"] == f"/api/generations/{body['id']}"
    assert body["status"] == "queued" and body["audioUrl"] is None
    (sent,) = kafka.sent
    assert sent.request_id == body["id"] and sent.source == "http"
    assert sent.tags == ("piano",) and sent.seed == 3 and sent.duration_s == 5
    assert sent.requester == "local"
    got = await client.get(answer.headers["Location"])
    assert (await got.json())["id"] == body["id"]


async def test_waiting_submit_answers_200_when_the_track_is_published(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client(wait_s=10)
    post = asyncio.create_task(client.post("/api/generate", json=BODY))
    await asyncio.wait_for(kafka.got_one.wait(), 5)
    rid = kafka.sent[0].request_id
    track = track_published(rid, seed=42)
    deps.hub.publish(await deps.store.apply([(rid, kafka.sent[0]), (rid, track)], {}))
    answer = await post
    body = await answer.json()
    assert answer.status == 200, body
    assert body["status"] == "completed" and body["seed"] == 42 and body["txHash"] == track.tx_hash
    assert body["audioUrl"].endswith(f"/api/generations/{rid}/audio")


async def test_idempotency_key_gives_the_same_request_once(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    headers = {"Idempotency-Key": "order-17"}
    first = await (await client.post("/api/generate", json=BODY, headers=headers)).json()
    again = await client.post("/api/generate", json=BODY, headers=headers)
    assert (await again.json())["id"] == first["id"]
    assert len(kafka.sent) == 1  # the retry was not queued twice
    other = await (await client.post("/api/generate", json=BODY)).json()
    assert other["id"] != first["id"]
    changed = await client.post("/api/generate", json={**BODY, "duration": 6}, headers=headers)
    error = (await changed.json())["error"]
    assert changed.status == 422 and error["code"] == "idempotency_key_reused"


async def test_idempotency_keys_are_scoped_to_the_api_key(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client(required=True)
    key = {"Idempotency-Key": "same"}
    a = await client.post("/api/generate", json=BODY, headers={**key, **bearer(KEYS["alice"])})
    b = await client.post("/api/generate", json=BODY, headers={**key, **bearer(KEYS["bob"])})
    assert (await a.json())["id"] != (await b.json())["id"]
    assert [r.requester for r in kafka.sent] == ["alice", "bob"]


async def test_keys_required_for_submitting_not_for_reading(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client(required=True)
    missing = await client.post("/api/generate", json=BODY)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await missing.json())["error"]["code"] == "unauthorized"
    wrong = await client.post("/api/generate", json=BODY, headers=bearer("nope"))
    assert wrong.status == 401
    assert not kafka.sent
    ok = await client.post("/api/generate", json=BODY, headers={"X-API-Key": KEYS["alice"]})
    assert ok.status == 202
    read = await client.get(f"/api/generations/{(await ok.json())['id']}")
    assert read.status == 200
    stale = await client.get(f"/api/generations/{(await ok.json())['id']}", headers=bearer("old"))
    assert stale.status == 200  # reads are public; a stale key does not lock a caller out


async def test_rate_limit_answers_429_with_retry_after_per_caller(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client(required=True, burst=2, per_minute=6)
    alice = bearer(KEYS["alice"])
    codes = [
        (await client.post("/api/generate", json=BODY, headers=alice)).status for _ in range(3)
    ]
    assert codes == [202, 202, 429]
    limited = await client.post("/api/generate", json=BODY, headers=alice)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["error"]["code"] == "rate_limited"
    bob = await client.post("/api/generate", json=BODY, headers=bearer(KEYS["bob"]))
    assert bob.status == 202  # another caller's budget
    assert len(kafka.sent) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration": 30}, "prompt"),
        ({"prompt": "   ", "duration": 30}, "prompt"),
        ({"prompt": "x", "duration": 500}, "duration"),
        ({"prompt": "x", "duration": True}, "duration"),
        ({"prompt": "x", "format": "ogg"}, "format"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "tags": ["a"] * 17}, "tags"),
        ({"prompt": "x", "colour": "red"}, "colour"),
    ],
)
async def test_invalid_bodies_name_the_field_and_queue_nothing(make_client, body, field) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    answer = await client.post("/api/generate", json=body)
    error = (await answer.json())["error"]
    assert answer.status == 422 and error["code"] == "invalid_request"
    assert error["field"] == field, error
    assert not kafka.sent


async def test_malformed_requests_get_json_errors(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    cases = [
        (client.post("/api/generate", data=b"{not json"), 400, "invalid_json"),
        (client.post("/api/generate", json=[1, 2]), 422, "invalid_request"),
        (client.post("/api/generate?wait=-1", json=BODY), 422, "invalid_request"),
        (client.get("/api/generations/0x12"), 400, "invalid_id"),
        (client.get("/api/generations/0x" + "0" * 64), 404, "not_found"),
        (client.get("/api/nothing-here"), 404, "not_found"),
        (client.delete("/api/generate"), 405, "method_not_allowed"),
        (client.post("/api/generate", data=b"x" * 100_000), 413, "too_large"),
    ]
    for request, status, code in cases:
        answer = await request
        assert answer.status == status, (status, await answer.text())
        assert (await answer.json())["error"]["code"] == code
    assert not kafka.sent


async def test_kafka_refusal_is_a_503_and_leaves_nothing_behind(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    kafka.fail = True
    headers = {"Idempotency-Key": "k1"}
    answer = await client.post("/api/generate", json=BODY, headers=headers)
    assert answer.status == 503 and (await answer.json())["error"]["code"] == "unavailable"
    kafka.fail = False
    retry = await client.post("/api/generate", json=BODY, headers=headers)
    assert retry.status == 202 and len(kafka.sent) == 1


async def test_audio_and_verify_wait_for_completion(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    for path in ("audio", "verify"):
        answer = await client.get(f"/api/generations/{rid}/{path}")
        assert answer.status == 409 and (await answer.json())["error"]["code"] == "not_ready"
    failed = GenerationFailed(request_id=rid, stage="generator", code="policy_artist", message="no")
    await deps.store.apply([(rid, failed)], {})
    body = await (await client.get(f"/api/generations/{rid}")).json()
    assert body["status"] == "failed" and body["error"]["code"] == "policy_artist"
    # Ended without a track: 410, so a client that retries on not_ready stops.
    for path in ("audio", "verify", "manifest"):
        answer = await client.get(f"/api/generations/{rid}/{path}")
        assert answer.status == 410 and (await answer.json())["error"]["code"] == "no_track"


async def test_verify_answers_camel_case_and_keeps_the_old_names(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    await deps.store.apply([(rid, kafka.sent[0]), (rid, track_published(rid))], {})
    body = await (await client.get(f"/api/generations/{rid}/verify")).json()
    assert body["status"] == "MATCH" and body["target"] == rid and body["exitCode"] == 0
    assert "requestId" in body and "alsoRegisteredAs" in body
    assert body["exit_code"] == 0 and "also_registered_as" in body  # deprecated, still there
    schema = verdict_schema()
    assert set(schema["required"]) <= body.keys() and body.keys() <= schema["properties"].keys()
    assert schema["properties"]["request_id"]["deprecated"] is True


class FakeCat:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    async def cat_iter(self, cid: str) -> AsyncIterator[bytes]:
        yield self.files[cid]


async def test_audio_carries_its_audio_hash_as_etag_and_answers_conditionals(  # type: ignore[no-untyped-def]
    make_client, tmp_path: Path
) -> None:
    client, deps, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    data = os.urandom(20_000)
    track = track_published(rid, audio_hash=keccak256_hex(data), size_bytes=len(data))
    await deps.store.apply([(rid, kafka.sent[0]), (rid, track)], {})
    deps.audio = AudioCache(FakeCat({track.cid: data}), tmp_path / "etag-audio")
    url = f"/api/generations/{rid}/audio"
    tag = f'"{track.audio_hash.removeprefix("0x")}"'

    first = await client.get(url)
    assert first.status == 200 and await first.read() == data
    assert first.headers["ETag"] == tag
    last_modified = first.headers["Last-Modified"]
    await asyncio.sleep(1.1)  # a serve must not move Last-Modified (one-second resolution)
    again = await client.get(url)
    assert again.headers["ETag"] == tag and again.headers["Last-Modified"] == last_modified
    # The cached copy goes (eviction, another replica): same bytes, same tag.
    for cached in (tmp_path / "etag-audio").iterdir():
        cached.unlink()
    refetched = await client.get(url)
    assert refetched.status == 200 and refetched.headers["ETag"] == tag

    assert (await client.get(url, headers={"If-None-Match": tag})).status == 304
    assert (await client.get(url, headers={"If-None-Match": '"other", ' + tag})).status == 304
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status == 200
    assert (await client.get(url, headers={"If-Match": '"other"'})).status == 412
    ranged = await client.get(url, headers={"If-Match": tag, "Range": "bytes=0-9"})
    assert ranged.status == 206 and await ranged.read() == data[:10]


async def test_events_stream_the_current_status_then_each_change(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    stream = await client.get(f"/api/generations/{rid}/events")
    assert stream.headers["Content-Type"] == "text/event-stream"
    first = await stream.content.readuntil(b"\n\n")
    # The reconnection delay comes with the first event, not as an empty event of its own.
    assert first.startswith(b"retry: 2000\nid: 1\nevent: status\ndata: ")
    assert b'"status": "queued"' in first
    failed = GenerationFailed(request_id=rid, stage="generator", code="x", message="no")
    deps.hub.publish(await deps.store.apply([(rid, failed)], {}))
    rest = await stream.content.read()
    assert rest.count(b"event: status") == 1 and b'"status": "failed"' in rest
    assert b"id: 1\n" in first and b"id: 4\n" in rest
    # A reconnect that has seen the final step gets 204 (an EventSource stops reconnecting);
    # one that saw step 1 gets the final one.
    again = await client.get(f"/api/generations/{rid}/events", headers={"Last-Event-ID": "4"})
    assert again.status == 204 and await again.read() == b""
    resumed = await client.get(f"/api/generations/{rid}/events", headers={"Last-Event-ID": "1"})
    assert (await resumed.read()).count(b"event: status") == 1


async def test_events_carry_the_denoising_steps_while_generating(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    stream = await client.get(f"/api/generations/{rid}/events")
    await stream.content.readuntil(b"\n\n")  # queued
    for step in (3, 8):
        progress = GenerationProgress(
            request_id=rid, stage="generating", worker="g", step=step, steps=8, eta_s=8 - step
        )
        deps.hub.publish(await deps.store.apply([(rid, kafka.sent[0]), (rid, progress)], {}))
    events = [await stream.content.readuntil(b"\n\n") for _ in range(3)]
    assert events[0].startswith(b"id: 2\nevent: status")  # generating
    assert (
        events[1]
        == b'event: progress\ndata: {"stepsDone":3,"stepsTotal":8,"percent":37.5,"etaS":5.0}\n\n'
    )
    assert b'"stepsDone":8' in events[2] and b'"percent":100.0' in events[2]
    record = await (await client.get(f"/api/generations/{rid}")).json()
    assert record["progress"] == {"stepsDone": 8, "stepsTotal": 8, "percent": 100.0, "etaS": 0.0}
    stream.close()


async def test_a_queued_record_tells_its_place_in_the_queue(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    ids = [(await (await client.post("/api/generate", json=BODY)).json())["id"] for _ in range(3)]
    places = [(await (await client.get(f"/api/generations/{i}")).json()) for i in ids]
    assert [p["queuePosition"] for p in places] == [1, 2, 3]
    started = GenerationProgress(request_id=ids[0], stage="generating", worker="g")
    await deps.store.apply([(ids[0], kafka.sent[0]), (ids[0], started)], {})
    first = await (await client.get(f"/api/generations/{ids[0]}")).json()
    last = await (await client.get(f"/api/generations/{ids[2]}")).json()
    assert first["queuePosition"] is None and last["queuePosition"] == 2


def test_rate_limiter_refills_at_its_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert [limiter.take("a", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", now=0.0) == pytest.approx(1.0)
    assert limiter.take("a", now=0.5) == pytest.approx(0.5)
    assert limiter.take("a", now=1.5) == 0.0


def test_keys_required_without_keys_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="none is configured"):
        ApiKeys({}, required=True)


DAPP = "https://dapp.example"


async def test_cors_lets_the_configured_origins_call_and_read(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client(cors=(DAPP,), required=True)
    preflight = await client.options(
        "/api/generate",
        headers={
            "Origin": DAPP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == DAPP
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert all(h in allowed for h in ("authorization", "content-type", "idempotency-key"))
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    posted = await client.post(
        "/api/generate", json=BODY, headers={"Origin": DAPP, **bearer(KEYS["alice"])}
    )
    assert posted.status == 202
    assert posted.headers["Access-Control-Allow-Origin"] == DAPP
    assert "Location" in posted.headers["Access-Control-Expose-Headers"]
    assert "Origin" in posted.headers.getall("Vary")
    rid = (await posted.json())["id"]
    # Errors and event streams carry it too: a page must be able to read why.
    refused = await client.post("/api/generate", json=BODY, headers={"Origin": DAPP})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == DAPP
    missing = await client.get(f"/api/generations/0x{'ab' * 32}", headers={"Origin": DAPP})
    assert missing.status == 404 and missing.headers["Access-Control-Allow-Origin"] == DAPP
    stream = await client.get(f"/api/generations/{rid}/events", headers={"Origin": DAPP})
    assert stream.headers["Access-Control-Allow-Origin"] == DAPP
    stream.close()

    # Another origin gets nothing that would let its page read the answer.
    other = "https://elsewhere.example"
    denied = await client.options(
        "/api/generate", headers={"Origin": other, "Access-Control-Request-Method": "POST"}
    )
    assert denied.status == 403 and "Access-Control-Allow-Origin" not in denied.headers
    read = await client.get(f"/api/generations/{rid}", headers={"Origin": other})
    assert read.status == 200 and "Access-Control-Allow-Origin" not in read.headers


async def test_without_origins_there_is_no_cors(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client()
    answer = await client.get("/api/openapi.json", headers={"Origin": DAPP})
    assert "Access-Control-Allow-Origin" not in answer.headers
    preflight = await client.options(
        "/api/generate", headers={"Origin": DAPP, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 405


async def test_any_origin_with_a_star(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client(cors=("*",))
    answer = await client.get("/api/openapi.json", headers={"Origin": "http://localhost:5173"})
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


async def test_list_pages_a_callers_records_with_no_repeats_or_gaps(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client(required=True, burst=1000, per_minute=60_000)

    async def submit(key: str, n: int) -> str:
        body = {**BODY, "prompt": f"song {n}"}
        answer = await client.post("/api/generate", json=body, headers=bearer(KEYS[key]))
        assert answer.status == 202
        return str((await answer.json())["id"])

    mine = [await submit("alice", n) for n in range(250)]
    theirs = await submit("bob", 0)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = "/api/generations?limit=40" + (f"&cursor={cursor}" if cursor else "")
        answer = await client.get(url, headers=bearer(KEYS["alice"]))
        assert answer.status == 200
        page = await answer.json()
        seen += [g["id"] for g in page["items"]]
        pages += 1
        await submit("alice", 1000 + pages)  # new work arrives between pages
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 7 and len(seen) == 250 and len(set(seen)) == 250
    assert seen == mine[::-1]  # newest first, exactly the records there were at the start
    assert theirs not in seen

    # Filters: status, source, time; an address lists its on-chain requests.
    failed = GenerationFailed(request_id=mine[0], stage="generator", code="x", message="no")
    await deps.store.apply([(mine[0], failed)], {})
    by_status = await (
        await client.get("/api/generations?status=failed,revoked", headers=bearer(KEYS["alice"]))
    ).json()
    assert [g["id"] for g in by_status["items"]] == [mine[0]]
    address = "0x" + "Ab" * 20
    chain = GenerationRequest(
        request_id="0x" + "99" * 32,
        source="chain",
        prompt="on chain",
        duration_s=10,
        requester=address,
        chain=ChainOrigin(
            chain_id=31337,
            contract=CONTRACT,
            block_number=5,
            block_hash="0x" + "22" * 32,
            tx_hash="0x" + "33" * 32,
            log_index=0,
        ),
    )
    await deps.store.apply([(chain.request_id, chain)], {})
    listed = await (await client.get(f"/api/generations?requester={address.lower()}")).json()
    assert [g["id"] for g in listed["items"]] == [chain.request_id]
    future = await (
        await client.get(
            "/api/generations?since=2999-01-01T00:00:00Z", headers=bearer(KEYS["alice"])
        )
    ).json()
    assert future == {"items": [], "nextCursor": None}
    for bad in (
        "limit=0",
        "limit=x",
        "status=done",
        "source=ftp",
        "since=yesterday",
        "cursor=bm9wZQ",
        "requester=alice",
    ):
        answer = await client.get(f"/api/generations?{bad}", headers=bearer(KEYS["alice"]))
        assert answer.status == 422, bad
        assert (await answer.json())["error"]["field"] == bad.split("=")[0]


async def test_list_takes_any_valid_time_even_outside_the_years_utc_holds(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client()
    await client.post("/api/generate", json=BODY)
    pages = {}
    for name, value in (
        ("until", "0001-01-01T00:22:25+01:00"),  # UTC: before year 1, before every record
        ("since", "9999-12-31T23:59:59-01:00"),  # UTC: after 9999, after every record
        ("since", "0001-01-01T00:22:25+01:00"),
    ):
        answer = await client.get("/api/generations", params={name: value})
        assert answer.status == 200, await answer.text()
        pages[(name, value[:4])] = len((await answer.json())["items"])
    assert pages == {("until", "0001"): 0, ("since", "9999"): 0, ("since", "0001"): 1}


async def test_invalid_submissions_spend_their_own_budget(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client(required=True, burst=2, per_minute=6)
    deps.error_limit = RateLimiter(per_minute=6, burst=3)
    alice = bearer(KEYS["alice"])
    invalid = [
        await client.post("/api/generate", json={"duration": 30}, headers=alice),
        await client.post("/api/generate", data=b"{", headers=alice),
        await client.post("/api/generate", data=b"x" * 70_000, headers=alice),
        await client.post("/api/generate", json={"duration": 30}, headers=alice),
    ]
    assert [a.status for a in invalid] == [422, 400, 413, 429]
    assert int(invalid[-1].headers["Retry-After"]) >= 1
    # The mistakes cost nothing of what alice may submit.
    valid = [(await client.post("/api/generate", json=BODY, headers=alice)).status for _ in "abc"]
    assert valid == [202, 202, 429] and len(kafka.sent) == 2


def test_the_pages_format_choices_are_the_services_formats() -> None:
    # The page lays the format out by hand: it must offer exactly what the API accepts.
    page = (Path(__file__).parents[2] / "listener/api/static/index.html").read_text()
    select = page[
        page.index('<select id="format"') : page.index(
            "</select>", page.index('<select id="format"')
        )
    ]
    assert re.findall(r'<option value="(\w+)"', select) == list(AUDIO_FORMATS)
