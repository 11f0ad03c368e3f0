"""The webhook side of the HTTP API in-process (`tests.unit.apiapp`): ``webhook`` and
``webhookEvents`` on submit, the secret route and the delivery log."""

from __future__ import annotations

import pytest

from listener.api.openapi import openapi_document
from listener.api.webhooks.signing import derive_secret
from tests.unit.apiapp import BODY, KEYS, MASTER, bearer

HOOK = "https://hooks.example/acesteps"


async def test_a_subscription_is_kept_with_the_request_not_sent_to_kafka(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    answer = await client.post("/api/generate", json={**BODY, "webhook": HOOK})
    body = await answer.json()
    assert answer.status == 202, body
    (sent,) = kafka.sent
    assert "webhook" not in sent.model_dump_json().lower()  # a job control, not an option
    assert "webhook" not in body and "webhookEvents" not in body
    log = await client.get(f"/api/generations/{body['id']}/webhooks")
    # Only the final statuses by default: nothing yet.
    assert log.status == 200 and await log.json() == {"items": []}
    stored = await deps.store.deliveries(body["id"])
    assert stored == []


async def test_queued_is_announced_once_when_asked_for(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    request = {**BODY, "webhook": HOOK, "webhookEvents": ["queued", "completed", "queued"]}
    headers = {"Idempotency-Key": "hooked"}
    first = await (await client.post("/api/generate", json=request, headers=headers)).json()
    again = await client.post("/api/generate", json=request, headers=headers)
    assert (await again.json())["id"] == first["id"]
    # The projection reads the request back: still queued, nothing more to announce.
    await deps.store.apply([(first["id"], kafka.sent[0])], {})
    log = await (await client.get(f"/api/generations/{first['id']}/webhooks")).json()
    (only,) = log["items"]
    assert only["type"] == "generation.queued" and only["status"] == "pending"
    assert only["attempts"] == 0 and only["id"].startswith("msg_")
    assert set(only) == {
        "id",
        "type",
        "status",
        "attempts",
        "nextAttemptAt",
        "lastHttpStatus",
        "lastError",
        "createdAt",
        "updatedAt",
    }
    other = await client.post(
        "/api/generate", json={**request, "webhook": HOOK + "/2"}, headers=headers
    )
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("webhook", "words"),
    [
        ("https://127.0.0.1/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://10.0.0.1/x", "private"),
        ("https://172.16.0.1/x", "private"),
        ("https://192.168.1.1/x", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[fe80::1]/x", "link-local"),
        ("https://[::ffff:127.0.0.1]/x", "loopback"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://100.64.0.1/x", "shared"),
        ("https://inside.example/x", "10.1.2.3 is a private address"),
        ("https://metadata.google.internal/x", "metadata name"),
        ("https://nowhere.example/x", "does not resolve"),
        ("http://hooks.example/x", "https URL is needed"),
        ("https://me:pw@hooks.example/x", "user info"),
        ("hooks.example/x", "https URL is needed"),
    ],
)
async def test_webhooks_to_unsafe_targets_are_refused(make_client, webhook, words) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    answer = await client.post("/api/generate", json={**BODY, "webhook": webhook})
    error = (await answer.json())["error"]
    assert answer.status == 422 and error["code"] == "invalid_request", error
    assert error["field"] == "webhook" and words in error["message"], error
    assert not kafka.sent


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"webhookEvents": ["completed"]}, "webhookEvents"),
        ({"webhook": HOOK, "webhookEvents": []}, "webhookEvents"),
        ({"webhook": HOOK, "webhookEvents": ["revoked"]}, "webhookEvents.0"),
        ({"webhook": HOOK, "webhookEvents": "completed"}, "webhookEvents"),
        ({"webhook": "https://hooks.example/" + "x" * 2048}, "webhook"),
        ({"webhook": 7}, "webhook"),
    ],
)
async def test_malformed_webhook_fields_name_the_field(make_client, extra, field) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    answer = await client.post("/api/generate", json={**BODY, **extra})
    error = (await answer.json())["error"]
    assert answer.status == 422 and error["field"] == field, error
    assert not kafka.sent


async def test_the_secret_route_answers_the_callers_secret(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client()
    answer = await client.get("/api/webhooks/secret")
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
    assert await answer.json() == {"secret": derive_secret(MASTER, "local")}

    keyed, _, _ = await make_client(required=True)
    alice = await (await keyed.get("/api/webhooks/secret", headers=bearer(KEYS["alice"]))).json()
    bob = await (await keyed.get("/api/webhooks/secret", headers=bearer(KEYS["bob"]))).json()
    assert alice["secret"] == derive_secret(MASTER, "alice") != bob["secret"]
    for headers in ({}, bearer("not a key")):
        refused = await keyed.get("/api/webhooks/secret", headers=headers)
        assert refused.status == 401 and (await refused.json())["error"]["code"] == "unauthorized"


async def test_the_delivery_log_is_only_for_the_key_that_submitted(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client(required=True)
    request = {**BODY, "webhook": HOOK, "webhookEvents": ["queued"]}
    posted = await client.post("/api/generate", json=request, headers=bearer(KEYS["alice"]))
    rid = (await posted.json())["id"]
    url = f"/api/generations/{rid}/webhooks"
    mine = await client.get(url, headers=bearer(KEYS["alice"]))
    assert mine.status == 200 and len((await mine.json())["items"]) == 1
    for headers in ({}, bearer(KEYS["bob"])):
        other = await client.get(url, headers=headers)
        assert other.status == 404 and (await other.json())["error"]["code"] == "not_found"
    unknown = await client.get(f"/api/generations/0x{'0' * 64}/webhooks", headers=bearer("x"))
    assert unknown.status == 404
    malformed = await client.get("/api/generations/0x12/webhooks")
    assert malformed.status == 400


def test_the_openapi_document_describes_webhooks() -> None:
    document = openapi_document("http://api.test")
    body = document["components"]["schemas"]["GenerateBody"]["properties"]
    assert {"webhook", "webhookEvents"} <= set(body)
    assert document["paths"]["/api/webhooks/secret"]["get"]["operationId"] == "getWebhookSecret"
    assert "/api/generations/{id}/webhooks" in document["paths"]
    sent = document["webhooks"]["generation"]["post"]
    assert [p["name"] for p in sent["parameters"]] == [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    schemas = document["components"]["schemas"]
    assert {"WebhookDeliveries", "WebhookDelivery", "WebhookSecret", "WebhookPayload"} <= set(
        schemas
    )
