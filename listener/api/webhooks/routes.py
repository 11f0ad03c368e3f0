"""The webhook routes.

GET /api/webhooks/secret               the caller's signing secret: ``{"secret": "whsec_..."}``
GET /api/generations/{id}/webhooks     the request's deliveries (only for the key that
                                       submitted it; 404 for any other caller)
"""

from __future__ import annotations

from aiohttp import web

from listener.api.deps import CALLER, DEPS, ApiFailure, lookup
from listener.api.webhooks.models import WebhookDeliveries, WebhookSecret
from listener.api.webhooks.signing import derive_secret

__all__ = ["add_routes"]


async def secret(request: web.Request) -> web.Response:
    """The secret that verifies the caller's webhooks (derived from its key id, the same on
    every replica and after restarts). With keys on, only for a caller with a valid key."""
    deps = request.app[DEPS]
    if deps.webhooks is None:
        raise ApiFailure(404, "not_found", "this server sends no webhooks")
    caller = request[CALLER]
    if deps.keys.required and caller == "local":  # no key, or a key that is not known
        raise ApiFailure(
            401,
            "unauthorized",
            "a webhook secret belongs to an API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="acesteps"'},
        )
    body = WebhookSecret(secret=derive_secret(deps.webhooks.master, caller))
    return web.json_response(body.model_dump(by_alias=True), headers={"Cache-Control": "no-store"})


async def deliveries(request: web.Request) -> web.Response:
    """Every delivery of the request's webhook, in the order they are sent: its id (the
    ``webhook-id``), ``type``, ``status``, attempts, the next attempt's time, the last answer's
    HTTP status and the last error."""
    g = await lookup(request)
    if g.source != "http" or g.requester != request[CALLER]:
        raise ApiFailure(404, "not_found", f"no request {g.id} submitted with this key")
    found = await request.app[DEPS].store.deliveries(g.id)
    body = WebhookDeliveries(items=found)
    return web.json_response(body.model_dump(mode="json", by_alias=True))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/webhooks/secret", secret)
    app.router.add_get("/api/generations/{id}/webhooks", deliveries)
