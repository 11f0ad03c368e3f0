"""Cancel and deadlines over HTTP: who may cancel, what is sent, how the record ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from acesteps.messages import GenerationCanceled, GenerationFailed
from listener.api.cancel import parse_duration
from listener.api.models import Generation, Status
from listener.api.updates import apply
from tests.factories import track_published
from tests.unit.apiapp import BODY, bearer

RID = "0x" + "ab" * 32


async def test_the_submitting_key_cancels_and_a_cancel_record_is_sent(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client(required=True)
    submitted = await client.post("/api/generate", json=BODY, headers=bearer("s3cret-alice"))
    rid = (await submitted.json())["id"]
    # Another key learns nothing: the same 404 as for an id that does not exist.
    other = await client.post(f"/api/generations/{rid}/cancel", headers=bearer("s3cret-bob"))
    unknown = await client.post(f"/api/generations/{RID}/cancel", headers=bearer("s3cret-bob"))
    assert other.status == unknown.status == 404
    assert kafka.cancels == []
    answer = await client.post(f"/api/generations/{rid}/cancel", headers=bearer("s3cret-alice"))
    body = await answer.json()
    assert answer.status == 202 and body["id"] == rid and body["status"] == "queued"
    assert answer.headers["Location"] == f"/api/generations/{rid}"
    (cancel,) = kafka.cancels
    assert (cancel.request_id, cancel.reason, cancel.by) == (rid, "requested", "alice")


async def test_a_request_that_ended_cannot_be_canceled(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    await deps.store.apply([(rid, kafka.sent[0]), (rid, track_published(rid))], {})
    answer = await client.post(f"/api/generations/{rid}/cancel")
    error = (await answer.json())["error"]
    assert answer.status == 409 and error["code"] == "not_cancelable"
    assert "completed" in error["message"] and kafka.cancels == []


async def test_a_cancel_kafka_refuses_is_a_503(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    kafka.fail = True
    answer = await client.post(f"/api/generations/{rid}/cancel")
    assert answer.status == 503 and (await answer.json())["error"]["code"] == "unavailable"


async def test_cancel_after_and_deadline_set_the_requests_deadline(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    before = datetime.now(UTC)
    answer = await client.post("/api/generate", json=BODY, headers={"Cancel-After": "1m30s"})
    assert answer.status == 202
    deadline = kafka.sent[-1].deadline
    assert deadline is not None
    assert timedelta(seconds=89) < deadline - before < timedelta(seconds=92)
    assert (await answer.json())["deadline"] is not None
    # Both: the earlier wins.
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    await client.post(
        "/api/generate", json={**BODY, "deadline": soon}, headers={"Cancel-After": "1h"}
    )
    assert kafka.sent[-1].deadline == datetime.fromisoformat(soon)
    await client.post("/api/generate", json=BODY)
    assert kafka.sent[-1].deadline is None


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"Cancel-After": "soon"}, {}, "Cancel-After"),
        ({"Cancel-After": "0"}, {}, "Cancel-After"),
        ({"Cancel-After": "8d"}, {}, "Cancel-After"),
        ({"Cancel-After": "200h"}, {}, "Cancel-After"),
        # Past the last datetime there is: refused, not an overflow (a 500 before).
        ({"Cancel-After": "247320012.0h403389241s3ms"}, {}, "Cancel-After"),
        ({}, {"deadline": "9999-12-31T23:59:59-01:00"}, "deadline"),
        ({}, {"deadline": "2001-01-01T00:00:00Z"}, "deadline"),
        ({}, {"deadline": "2999-01-01T00:00:00Z"}, "deadline"),
        ({}, {"deadline": "2030-01-01T00:00:00"}, "deadline"),
        ({}, {"deadline": "tomorrow"}, "deadline"),
    ],
)
async def test_unusable_deadlines_are_refused_before_queueing(  # type: ignore[no-untyped-def]
    make_client, headers, body, field
) -> None:
    client, _, kafka = await make_client()
    answer = await client.post("/api/generate", json={**BODY, **body}, headers=headers)
    error = (await answer.json())["error"]
    assert answer.status == 422 and error["field"] == field, error
    assert kafka.sent == []


def test_durations_read_like_cancel_after_values_elsewhere() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "5m", "1h30m", "1.5s", "500ms")] == [
        90,
        90,
        300,
        5400,
        1.5,
        0.5,
    ]
    for bad in ("", "s", "1x", "1h 30m", "-5", "1e3", "m5"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def canceled(reason: str = "requested") -> GenerationCanceled:
    return GenerationCanceled(
        request_id=RID, stage="generator", reason=reason, message="canceled by its API key (a)"
    )


def test_a_cancel_ends_the_record_with_its_reason() -> None:
    g = apply(Generation(id=RID, status=Status.GENERATING), canceled())
    assert g is not None and g.status is Status.CANCELED and g.status.final
    assert g.error is not None and (g.error.stage, g.error.code) == ("generator", "canceled")
    late = apply(Generation(id=RID, status=Status.QUEUED), canceled("deadline"))
    assert late is not None and late.error is not None
    assert late.error.code == "deadline_exceeded"


def test_a_registration_outranks_a_cancel_in_either_order() -> None:
    track = track_published(RID)
    for first, second in ((canceled(), track), (track, canceled())):
        g = apply(apply(Generation(id=RID, status=Status.GENERATING), first), second)
        assert g is not None and g.status is Status.COMPLETED
    failed = GenerationFailed(request_id=RID, stage="publisher", code="x", message="y")
    g = apply(apply(Generation(id=RID, status=Status.QUEUED), failed), canceled())
    assert g is not None and g.status is Status.CANCELED  # the later verdict of a non-registration
