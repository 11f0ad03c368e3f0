"""The submit-time side of webhooks: a body's ``webhook`` checked and made a subscription."""

from __future__ import annotations

from listener.api.deps import ApiDeps, ApiFailure
from listener.api.models import GenerateBody
from listener.api.webhooks.models import DEFAULT_EVENTS, Subscription
from listener.api.webhooks.targets import TargetRefused

__all__ = ["subscription"]


async def subscription(deps: ApiDeps, body: GenerateBody, key_id: str) -> Subscription | None:
    """The subscription ``body`` asks for, signed with ``key_id``'s secret; None without a
    ``webhook``. 422 ``invalid_request`` (field ``webhook``) for a URL a webhook may not call
    (`listener.api.webhooks.targets`), checked against the host's addresses now."""
    if body.webhook is None:
        return None
    if deps.webhooks is None:
        raise ApiFailure(422, "invalid_request", "webhook: this server sends none", "webhook")
    try:
        await deps.webhooks.targets.check(body.webhook)
    except TargetRefused as exc:
        raise ApiFailure(422, "invalid_request", f"webhook: {exc}", "webhook") from None
    events = body.webhook_events or DEFAULT_EVENTS
    return Subscription(url=body.webhook, events=tuple(events), key_id=key_id)
