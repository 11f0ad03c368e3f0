"""What webhooks are made of: a request's subscription, the deliveries of its status
transitions, and what the delivery log answers (pure data, both stores use it).

A delivery is one message (one ``webhook-id``) to one URL: the record as it was when its
status entered a subscribed one. It is ``pending`` until an attempt gets a 2xx answer
(``delivered``) or the last retry fails (``failed``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from acesteps.options import api_name
from listener.api.models import Generation, WebhookEvent
from listener.api.rows import Transition

__all__ = [
    "DEFAULT_EVENTS",
    "EVENTS",
    "Attempted",
    "Claimed",
    "DeliveryState",
    "NewDelivery",
    "Subscription",
    "WebhookDeliveries",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookPayload",
    "WebhookSecret",
    "deliveries_for",
    "event_type",
    "new_delivery",
]

EVENTS: Final[tuple[str, ...]] = get_args(WebhookEvent)
DEFAULT_EVENTS: Final[tuple[str, ...]] = ("completed", "failed", "canceled")
"""When a body gives ``webhook`` without ``webhookEvents``: where a request ends."""

DeliveryState = Literal["pending", "delivered", "failed"]


def event_type(status: str) -> str:
    """The ``type`` of the message announcing ``status``: ``generation.<status>``."""
    return f"generation.{status}"


class Subscription(BaseModel):
    """Where and what to announce of one request, and whose secret signs it (the API key that
    submitted it). Kept with the request's row in the status store, never on Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str
    events: tuple[str, ...]
    key_id: str

    def wants(self, status: str) -> bool:
        return status in self.events


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to store: its message id, request, signer, URL, ``type``, the record it
    announces (`Generation` JSON) and when the status changed."""

    id: str
    request_id: str
    key_id: str
    url: str
    event: str
    snapshot: str
    created_at: datetime


def new_delivery(sub: Subscription, g: Generation) -> NewDelivery:
    """The delivery announcing ``g``'s status to ``sub``; a fresh ``msg_...`` id."""
    return NewDelivery(
        id=f"msg_{uuid.uuid4().hex}",
        request_id=g.id,
        key_id=sub.key_id,
        url=sub.url,
        event=event_type(g.status.value),
        snapshot=g.model_dump_json(),
        created_at=g.updated_at,
    )


def deliveries_for(
    transitions: Iterable[Transition], subscriptions: Mapping[str, Subscription]
) -> list[NewDelivery]:
    """The deliveries of ``transitions`` (in their order) that a subscription asks for."""
    found = []
    for t in transitions:
        sub = subscriptions.get(t.request_id)
        if sub is not None and sub.wants(t.after.status.value):
            found.append(new_delivery(sub, t.after))
    return found


def render(event: str, at: datetime, snapshot: str, base_url: str) -> bytes:
    """A message's body: ``{"type", "timestamp", "data"}``, ``data`` being the record as
    ``GET /api/generations/{id}`` answers it. The same bytes on every attempt."""
    data = Generation.model_validate_json(snapshot).public(base_url)
    body = {"type": event, "timestamp": at.astimezone(UTC).isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Claimed:
    """A pending delivery a replica holds for one attempt (until its lease runs out)."""

    id: str
    request_id: str
    key_id: str
    url: str
    event: str
    snapshot: str
    created_at: datetime
    attempts: int
    """Attempts made before this one."""
    lease: str

    def body(self, base_url: str) -> bytes:
        return render(self.event, self.created_at, self.snapshot, base_url)


@dataclass(frozen=True)
class Attempted:
    """What an attempt came to: the delivery's state after it and when to try again."""

    state: DeliveryState
    at: datetime
    next_at: datetime | None = None
    http_status: int | None = None
    error: str | None = None


_CAMEL = ConfigDict(alias_generator=api_name, populate_by_name=True, frozen=True)


class WebhookDelivery(BaseModel):
    """One delivery in ``GET /api/generations/{id}/webhooks``."""

    model_config = _CAMEL
    id: str = Field(description="the webhook-id header: the same on every attempt")
    type: str = Field(description="generation.<status>")
    status: DeliveryState
    attempts: int = Field(ge=0)
    next_attempt_at: datetime | None = Field(None, description="while pending")
    last_http_status: int | None = Field(None, description="the last attempt's answer")
    last_error: str | None = Field(None, description="why the last attempt failed")
    created_at: datetime
    updated_at: datetime


class WebhookDeliveries(BaseModel):
    model_config = _CAMEL
    items: list[WebhookDelivery] = Field(description="in the order they are sent")


class WebhookPayload(BaseModel):
    """The body of every webhook message (`render` makes it)."""

    model_config = _CAMEL
    type: str = Field(
        description="generation.<status>: the status the request entered",
        pattern=f"^generation\\.({'|'.join(EVENTS)})$",
    )
    timestamp: datetime = Field(description="when it entered that status")
    data: Generation = Field(description="the record then, as GET /api/generations/{id} answers")


class WebhookSecret(BaseModel):
    model_config = _CAMEL
    secret: str = Field(description="whsec_ + base64 of the key: verifies this key's webhooks")
