"""Variations over HTTP, in-process (`tests.unit.apiapp`): ``POST /api/generate`` with
``variations`` n fans out into the request and n - 1 children (`acesteps.variations`), stored
in one transaction and queued; records link them; a parent's cancel stops its variations.
The real stack's run is tests/integration/test_variations_api.py."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acesteps.cli.api import ApiClient, open_session
from acesteps.cli.generate import GenerateOptions, generate
from acesteps.messages import ChainOrigin, GenerationCanceled, GenerationRequest
from acesteps.registry import offchain_request_id
from acesteps.variations import default_seed, variation_key
from listener.api.family import Deployment, child_ids
from listener.api.models import Generation, Status
from listener.api.rows import Submission
from listener.api.sqlitestore import SqliteStore
from listener.api.updates import apply
from tests.factories import track_published
from tests.unit.apiapp import BODY, CHAIN_ID, CONTRACT, bearer

HOOK = "https://hooks.example/acesteps"


def http_child(parent: str, k: int) -> str:
    """Child ``k``'s request id, derived as the parent's: offchainRequestId of its key."""
    return offchain_request_id(CHAIN_ID, CONTRACT, variation_key(parent, k))


async def submit(client: Any, status: int = 202, **extra: Any) -> dict[str, Any]:
    headers = extra.pop("headers", None)
    answer = await client.post("/api/generate", json={**BODY, **extra}, headers=headers)
    body: dict[str, Any] = await answer.json()
    assert answer.status == status, body
    return body


async def record(client: Any, rid: str) -> dict[str, Any]:
    answer = await client.get(f"/api/generations/{rid}")
    assert answer.status == 200
    body: dict[str, Any] = await answer.json()
    return body


# ---------------------------------------------------------------- fan-out


async def test_variations_fan_out_into_requests_of_their_own(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    parent = await submit(client, variations=3, seed=5, tags=["piano"])
    pid = parent["id"]
    children = [http_child(pid, 1), http_child(pid, 2)]
    # The answer is the parent's record: it names its variations.
    assert parent["variations"] == 3 and parent["children"] == children
    assert "parent" not in parent and "variation" not in parent
    # Three messages: the parent first, then each child, with its own id and the next seed.
    assert [m.request_id for m in kafka.sent] == [pid, *children]
    first, *rest = kafka.sent
    assert first.variations == 3 and first.seed == 5 and first.parent_id is None
    for k, child in enumerate(rest, start=1):
        assert child.offchain_id == variation_key(pid, k)
        assert child.request_id == offchain_request_id(CHAIN_ID, CONTRACT, child.offchain_id)
        assert (child.parent_id, child.variation, child.seed) == (pid, k, 5 + k)
        assert child.variations is None and child.source == "http"
        assert (child.prompt, child.tags, child.duration_s) == (first.prompt, ("piano",), 5)
        assert child.requester == first.requester and child.requested_at == first.requested_at
        got = await record(client, child.request_id)
        assert got["status"] == "queued" and got["seed"] == 5 + k
        assert (got["parent"], got["variation"]) == (pid, k)
        assert "children" not in got and "variations" not in got
    # Each is listed as a request of its own.
    listed = await (await client.get("/api/generations")).json()
    assert sorted(g["id"] for g in listed["items"]) == sorted([pid, *children])


async def test_without_a_seed_the_children_follow_the_parents_default_seed(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    pid = (await submit(client, variations=2))["id"]
    (child,) = kafka.sent[1:]
    assert kafka.sent[0].seed is None
    assert child.seed == (default_seed(pid) + 1) % 2**32


async def test_one_variation_is_one_request(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    body = await submit(client, variations=1)
    assert len(kafka.sent) == 1 and kafka.sent[0].variations is None
    assert "children" not in body and "variations" not in body
    for bad in (0, 5, True, 2.5):
        refused = await client.post("/api/generate", json={**BODY, "variations": bad})
        error = (await refused.json())["error"]
        assert refused.status == 422 and error["field"] == "variations", bad
    assert len(kafka.sent) == 1


# ---------------------------------------------------------------- idempotency, atomicity


async def test_an_idempotent_retry_returns_the_parent_and_queues_nothing_twice(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    headers = {"Idempotency-Key": "album-1"}
    first = await submit(client, variations=3, headers=headers)
    again = await submit(client, variations=3, headers=headers)
    assert again["id"] == first["id"] and again["children"] == first["children"]
    assert len(kafka.sent) == 3
    # Another number of variations is another body.
    changed = await client.post("/api/generate", json={**BODY, "variations": 2}, headers=headers)
    assert (await changed.json())["error"]["code"] == "idempotency_key_reused"
    # Not read back after resend_after_s: a retry sends again what the projection has not
    # seen (here the parent was read back, its children were not).
    await deps.store.apply([(first["id"], kafka.sent[0])], {})
    deps.resend_after_s = 0
    await submit(client, variations=3, headers=headers)
    assert [m.request_id for m in kafka.sent[3:]] == first["children"]
    assert all(m.parent_id == first["id"] for m in kafka.sent[3:])


async def test_the_family_is_stored_in_one_transaction(make_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    store: SqliteStore = deps.store
    real = store._submit
    calls: list[str] = []

    def failing(submission: Submission, *args: Any) -> Any:
        calls.append(submission.generation.id)
        if len(calls) == 3:  # the parent and variation 1 are written: then the disk fails
            raise OSError("disk full")
        return real(submission, *args)

    monkeypatch.setattr(store, "_submit", failing)
    answer = await client.post("/api/generate", json={**BODY, "variations": 3})
    assert answer.status == 500
    assert kafka.sent == []
    for rid in calls:
        assert await store.get(rid) is None  # rolled back: neither parent nor child remains
    monkeypatch.setattr(store, "_submit", real)
    # Once it works, all three are there.
    pid = (await submit(client, variations=3))["id"]
    for rid in (pid, http_child(pid, 1), http_child(pid, 2)):
        assert await store.get(rid) is not None


async def test_a_kafka_refusal_before_any_send_leaves_nothing_behind(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    kafka.fail = True
    headers = {"Idempotency-Key": "k1"}
    refused = await client.post("/api/generate", json={**BODY, "variations": 3}, headers=headers)
    assert refused.status == 503
    listed = await (await client.get("/api/generations")).json()
    assert listed["items"] == []
    kafka.fail = False
    retry = await submit(client, variations=3, headers=headers)
    assert [m.request_id for m in kafka.sent] == [retry["id"], *retry["children"]]


async def test_a_refusal_after_the_parent_was_sent_leaves_the_rest_to_the_outbox(
    make_client,
) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    real = kafka.submit

    async def flaky(request: GenerationRequest) -> None:
        if request.variation == 2:
            raise ConnectionError("broker down")
        await real(request)

    kafka.submit = flaky
    body = await submit(client, variations=3)  # the request is queued: accepted
    assert [m.request_id for m in kafka.sent] == [body["id"], body["children"][0]]
    assert (await record(client, body["children"][1]))["status"] == "queued"
    unsent = await deps.store.unsent(datetime.now(UTC) + timedelta(hours=1))
    assert {GenerationRequest.model_validate_json(doc).request_id for doc in unsent} == {
        body["id"],
        *body["children"],
    }  # none read back yet: the outbox would send each again, the refused one included


# ---------------------------------------------------------------- webhooks


async def test_each_variation_gets_the_webhook_subscription(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client()
    body = await submit(client, variations=3, webhook=HOOK, webhookEvents=["queued", "completed"])
    for rid in (body["id"], *body["children"]):
        (queued,) = await deps.store.deliveries(rid)
        assert queued.type == "generation.queued"


# ---------------------------------------------------------------- records


def test_a_parents_children_come_from_its_id_for_both_sources() -> None:
    pid = "0x" + "ab" * 32
    deployment = Deployment(CHAIN_ID, CONTRACT)
    assert child_ids(pid, 3, "http", deployment) == [http_child(pid, 1), http_child(pid, 2)]
    # A chain parent's children are the contract's: their ids are the keys themselves.
    assert child_ids(pid, 3, "chain", None) == [variation_key(pid, 1), variation_key(pid, 2)]
    assert child_ids(pid, None, "http", deployment) is None
    assert child_ids(pid, 3, "http", None) is None  # not known without the deployment

    origin = ChainOrigin(
        chain_id=CHAIN_ID,
        contract=CONTRACT,
        block_number=1,
        block_hash="0x" + "33" * 32,
        tx_hash="0x" + "11" * 32,
        log_index=0,
    )
    chain = GenerationRequest(
        request_id=pid,
        source="chain",
        requester="0x" + "22" * 20,
        chain=origin,
        prompt="x",
        variations=4,
    )
    folded = apply(None, chain)
    assert folded is not None
    assert folded.children == [variation_key(pid, k) for k in (1, 2, 3)]
    http = GenerationRequest(request_id=pid, source="http", requester="k", prompt="x", variations=2)
    made = apply(None, http, deployment)
    assert made is not None and made.children == [http_child(pid, 1)]
    # Without the deployment the fold leaves what the API stored on submit.
    stored = Generation(id=pid, status=Status.QUEUED, children=[http_child(pid, 1)])
    again = apply(stored, http)
    assert again is not None and again.children == [http_child(pid, 1)]


async def test_a_rebuilt_store_links_the_family_again(make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    body = await submit(client, variations=3, seed=9)
    fresh = await SqliteStore(
        tmp_path / "rebuilt.sqlite3", deployment=Deployment(CHAIN_ID, CONTRACT)
    ).open()
    try:
        # The topics alone (as a store rebuilt from them): children last, as they may come.
        await fresh.apply([(m.request_id, m) for m in reversed(kafka.sent)], {})
        parent = await fresh.get(body["id"])
        assert parent is not None and parent.children == body["children"]
        for k, rid in enumerate(body["children"], start=1):
            child = await fresh.get(rid)
            assert child is not None and (child.parent, child.variation) == (body["id"], k)
    finally:
        await fresh.close()


# ---------------------------------------------------------------- cancel


async def test_canceling_a_parent_cancels_its_variations_that_have_not_ended(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client(required=True)
    alice = bearer("s3cret-alice")
    body = await submit(client, variations=3, headers=alice)
    pid, (one, two) = body["id"], body["children"]
    await deps.store.apply([(one, kafka.sent[1]), (one, track_published(one))], {})
    # Another key learns nothing.
    other = await client.post(f"/api/generations/{pid}/cancel", headers=bearer("s3cret-bob"))
    assert other.status == 404 and kafka.cancels == []
    answer = await client.post(f"/api/generations/{pid}/cancel", headers=alice)
    assert answer.status == 202 and (await answer.json())["id"] == pid
    # The completed variation is left alone.
    assert [(c.request_id, c.by) for c in kafka.cancels] == [(pid, "alice"), (two, "alice")]


async def test_canceling_a_variation_cancels_it_alone(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    body = await submit(client, variations=3)
    answer = await client.post(f"/api/generations/{body['children'][1]}/cancel")
    assert answer.status == 202
    assert [c.request_id for c in kafka.cancels] == [body["children"][1]]


async def test_a_parent_that_ended_still_cancels_its_running_variations(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    body = await submit(client, variations=2)
    pid, (child,) = body["id"], body["children"]
    canceled = GenerationCanceled(
        request_id=pid, stage="generator", reason="requested", message="canceled"
    )
    await deps.store.apply([(pid, kafka.sent[0]), (pid, canceled)], {})
    answer = await client.post(f"/api/generations/{pid}/cancel")
    assert answer.status == 202 and [c.request_id for c in kafka.cancels] == [child]
    # Once every one has ended: 409.
    await deps.store.apply([(child, kafka.sent[1]), (child, track_published(child))], {})
    refused = await client.post(f"/api/generations/{pid}/cancel")
    error = (await refused.json())["error"]
    assert refused.status == 409 and error["code"] == "not_cancelable"
    assert "variations" in error["message"] and len(kafka.cancels) == 1


# ---------------------------------------------------------------- pages, CLI


async def test_track_pages_link_a_parent_and_its_variations(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client()
    body = await submit(client, variations=3)
    html = await (await client.get(f"/tracks/{body['id']}")).text()
    for child in body["children"]:
        assert f'href="../tracks/{child}"' in html
    assert 'data-testid="variations"' in html
    html = await (await client.get(f"/tracks/{body['children'][1]}")).text()
    assert f'href="../tracks/{body["id"]}"' in html and "2 of" in html
    plain = await submit(client)
    html = await (await client.get(f"/tracks/{plain['id']}")).text()
    assert "Variation" not in html


async def test_the_page_and_the_cli_offer_variations(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    document = await (await client.get("/api/openapi.json")).json()
    schema = document["components"]["schemas"]["GenerateBody"]["properties"]["variations"]
    branch = next(s for s in schema["anyOf"] if s.get("type") == "integer")
    assert (branch["minimum"], branch["maximum"]) == (1, 4)
    url = str(client.make_url("")).rstrip("/")
    stdout, stderr = io.StringIO(), io.StringIO()
    opts = GenerateOptions({**BODY, "variations": 3}, wait=False)
    async with open_session(None) as session:
        code = await generate(ApiClient(session, url), opts, stdout=stdout, stderr=stderr)
    assert code == 0, stderr.getvalue()
    pid, *children = [m.request_id for m in kafka.sent]
    lines = stderr.getvalue().splitlines()
    assert lines == [f"request {pid}", f"variation 1 {children[0]}", f"variation 2 {children[1]}"]


@pytest.mark.parametrize("n", [2, 4])
async def test_every_count_of_variations_is_as_many_requests(make_client, n: int) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    body = await submit(client, variations=n, seed=2**32 - 1)
    assert len(kafka.sent) == n and len(body["children"]) == n - 1
    assert [m.seed for m in kafka.sent] == [2**32 - 1, *range(0, n - 1)]  # modulo 2^32
