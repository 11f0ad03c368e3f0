"""The status transitions `rows.fold` reports (what webhooks announce), and the deliveries and
message bodies made of them."""

from __future__ import annotations

import json

from acesteps.messages import GenerationFailed, GenerationProgress, GenerationRequest, Message
from listener.api.models import Generation, Status
from listener.api.rows import Event, Row, fold
from listener.api.webhooks.models import (
    Subscription,
    WebhookPayload,
    deliveries_for,
    new_delivery,
    render,
)
from tests.factories import track_published

RID = "0x" + "11" * 32
OTHER = "0x" + "22" * 32
REQUEST = GenerationRequest(request_id=RID, source="http", prompt="rain", requester="alice")


def events(*messages: Message) -> list[Event]:
    return [(str(m.request_id), m) for m in messages]  # type: ignore[attr-defined]


def progress(stage: str, rid: str = RID) -> GenerationProgress:
    return GenerationProgress(request_id=rid, stage=stage, worker="w")  # type: ignore[arg-type]


def submitted() -> Row:
    """A row as ``POST /api/generate`` stores it: queued, before Kafka has the request."""
    g = Generation(id=RID, status=Status.QUEUED, source="http", prompt="rain", requester="alice")
    return Row(g, "fingerprint", False)


def test_one_batch_reports_each_transition_in_order_with_its_record() -> None:
    folded = fold(
        {RID: submitted()},
        events(
            REQUEST,
            progress("generating"),
            progress("publishing"),
            track_published(RID),
        ),
    )
    moves = [(t.before, t.after.status) for t in folded.transitions]
    assert moves == [
        (Status.QUEUED, Status.GENERATING),
        (Status.GENERATING, Status.PUBLISHING),
        (Status.PUBLISHING, Status.COMPLETED),
    ]
    # Each with the record at that point: the track only in the last one.
    assert [t.after.cid for t in folded.transitions] == [None, None, track_published(RID).cid]
    assert folded.rows[RID].generation == folded.transitions[-1].after
    assert folded.rows[RID].request_seen


def test_a_record_that_does_not_change_the_status_makes_no_transition() -> None:
    # The request read back from Kafka after the submit: queued already (announced at submit).
    assert fold({RID: submitted()}, events(REQUEST)).transitions == []
    # A progress hint that comes late, and a failure after the registration, change nothing.
    done = fold({RID: submitted()}, events(track_published(RID))).rows[RID]
    late = fold(
        {RID: done},
        events(
            progress("generating"),
            GenerationFailed(request_id=RID, stage="publisher", code="x", message="m"),
        ),
    )
    assert late.transitions == []


def test_a_request_without_a_row_starts_from_none() -> None:
    folded = fold({}, events(REQUEST, progress("generating")))
    assert [(t.before, t.after.status) for t in folded.transitions] == [
        (None, Status.QUEUED),
        (Status.QUEUED, Status.GENERATING),
    ]


def test_transitions_of_several_requests_keep_the_order_of_the_records() -> None:
    other = REQUEST.model_copy(update={"request_id": OTHER})
    folded = fold(
        {RID: submitted()},
        events(progress("generating"), other, progress("generating", OTHER), track_published(RID)),
    )
    assert [(t.request_id, t.after.status) for t in folded.transitions] == [
        (RID, Status.GENERATING),
        (OTHER, Status.QUEUED),
        (OTHER, Status.GENERATING),
        (RID, Status.COMPLETED),
    ]


def test_deliveries_are_made_only_for_subscribed_statuses() -> None:
    folded = fold(
        {RID: submitted()},
        events(progress("generating"), progress("publishing"), track_published(RID)),
    )
    sub = Subscription(
        url="https://hooks.example/x", events=("generating", "completed"), key_id="k"
    )
    made = deliveries_for(folded.transitions, {RID: sub})
    assert [d.event for d in made] == ["generation.generating", "generation.completed"]
    assert len({d.id for d in made}) == 2 and all(d.id.startswith("msg_") for d in made)
    assert all(d.url == sub.url and d.key_id == "k" for d in made)
    assert deliveries_for(folded.transitions, {}) == []  # no subscription, nothing


def test_the_body_is_the_public_record_with_absolute_urls() -> None:
    g = fold({RID: submitted()}, events(track_published(RID))).rows[RID].generation
    d = new_delivery(Subscription(url="https://h.example", events=("completed",), key_id="k"), g)
    body = render(d.event, d.created_at, d.snapshot, "https://api.example")
    assert body == render(d.event, d.created_at, d.snapshot, "https://api.example")  # retries
    parsed = json.loads(body)
    assert parsed["type"] == "generation.completed"
    assert parsed["data"] == g.public("https://api.example")
    assert parsed["data"]["audioUrl"] == f"https://api.example/api/generations/{RID}/audio"
    assert WebhookPayload.model_validate_json(body).data.id == RID
    assert "secret" not in body.decode().lower()
