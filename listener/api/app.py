"""The aiohttp application: routes, and the middlewares every request goes through.

Middlewares, outermost first: CORS preflights (`listener.api.cors`, when origins are set),
metrics (count and time per route), the request id of the log lines, errors (every error is JSON
``{"error": {"code", "message", "field"?}}``; an unexpected exception is logged and answered
500 without details), then callers (API key, rate limit). Handlers live in
`listener.api.routes`; what they need is in `ApiDeps`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Histogram

from acesteps import logs
from acesteps.types import parse_request_id
from listener.api import contract, pages, routes, uploads
from listener.api.auth import Unauthorized
from listener.api.cors import Cors
from listener.api.deps import CALLER, DEPS, STATIC, ApiDeps, ApiFailure, error_response
from listener.api.webhooks import routes as webhooks

__all__ = ["create_app"]

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "acesteps_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "acesteps_api_request_seconds",
    "time to answer (to the first byte for streams)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def _metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        LATENCY.labels(request.method, name).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, name, str(status)).inc()


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiFailure:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason, **_kept_headers(exc))
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error; the server log has details")


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}


@web.middleware
async def _about(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Lines logged while answering about a request carry its id (`acesteps.logs`)."""
    with logs.about(parse_request_id(request.match_info.get("id", ""))):
        return await handler(request)


@web.middleware
async def _callers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who calls (API key) and whether their budget allows it (429 + Retry-After)."""
    if not request.path.startswith("/api/") or request.path == "/api/openapi.json":
        return await handler(request)
    deps = request.app[DEPS]
    secret = _secret(request)
    writing = request.method == "POST"
    # Reads are public by request id (256-bit, unguessable; the tracks themselves are public
    # on IPFS and on chain): a read with a stale key is served as anonymous. Submitting
    # (GPU time) and cancelling need a valid key when keys are on.
    try:
        key_id = deps.keys.identify(secret)
    except Unauthorized as exc:
        if writing:
            raise ApiFailure(
                401,
                "unauthorized",
                str(exc),
                headers={"WWW-Authenticate": 'Bearer realm="acesteps"'},
            ) from None
        key_id = None
    request[CALLER] = key_id or "local"
    bucket = key_id or f"addr:{request.remote}"
    if request.path not in SUBMITTING:
        _allowed(deps.read_limit.take(bucket), bucket)
        return await handler(request)
    # A submission (or an upload) spends from one budget once its answer says whether it was
    # valid: an invalid one (refused before it changes anything) from the errors budget, and
    # is answered 429 instead when that is spent; any other from the generate budget.
    _allowed(deps.generate_limit.wait(bucket), bucket)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status in INVALID:
            _allowed(deps.error_limit.take(bucket), bucket)
        elif exc.status != 429:
            deps.generate_limit.take(bucket)
        raise
    deps.generate_limit.take(bucket)
    return response


SUBMITTING = ("/api/generate", "/api/uploads")
"""The POSTs that spend the generate budget (an upload is the first step of an edit)."""
INVALID = (400, 413, 415, 422)
"""The answers to submissions that spend the error budget."""


def _allowed(wait: float, bucket: str) -> None:
    if wait > 0:
        retry = str(max(1, int(wait + 0.999)))
        raise ApiFailure(
            429,
            "rate_limited",
            f"too many requests for {bucket}; retry in {retry} s",
            headers={"Retry-After": retry},
        )


def _secret(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def create_app(deps: ApiDeps) -> web.Application:
    app = web.Application(
        middlewares=[_metrics, _about, _errors, _callers], client_max_size=64 * 1024
    )
    app[DEPS] = deps
    routes.add_routes(app)
    contract.add_routes(app)
    uploads.add_routes(app)
    pages.add_routes(app)
    webhooks.add_routes(app)
    app.router.add_static("/static/", STATIC, name="static")
    app.on_response_prepare.append(_revalidate_static)
    Cors(deps.cors_origins).install(app)
    return app


async def _revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    # The page's scripts change with the server: browsers revalidate (ETag) on every load.
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"
