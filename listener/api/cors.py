"""Cross-origin calls from browser dApps (CORS), for the origins ``ACESTEPS_API_CORS_ORIGINS``
names (``*``: any). Off when it is empty: browsers then keep pages of other origins from
reading the API's answers, as before.

The API authenticates with a bearer key in a header, never a cookie, so no credentials mode is
offered: a page on an allowed origin sends its own key (or none, for reads). A preflight
(``OPTIONS`` with ``Access-Control-Request-Method``) is answered here, before routing, with
the methods and request headers the API understands; every other answer to an allowed origin,
errors and event streams included, carries ``Access-Control-Allow-Origin`` and exposes the
headers a client needs (``Location``, ``Retry-After``, ``ETag``, ``Content-Range``, ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

__all__ = ["Cors"]

ALLOW_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOW_HEADERS = (
    "Authorization, X-API-Key, Content-Type, Idempotency-Key, Prefer, Last-Event-ID, "
    "If-None-Match, If-Match, If-Modified-Since, Range"
)
EXPOSE_HEADERS = (
    "Location, Retry-After, ETag, Last-Modified, Content-Range, Content-Length, Accept-Ranges, "
    "Content-Disposition, WWW-Authenticate"
)
MAX_AGE_S = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Cors:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)
        self.any = "*" in self.origins

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin in self.origins)

    def install(self, app: web.Application) -> None:
        if self.origins:
            app.middlewares.insert(0, self._preflight)
            app.on_response_prepare.append(self._headers)

    @web.middleware
    async def _preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        if not self.allowed(request.headers.get("Origin")):
            return web.Response(status=403, text="origin not allowed")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": str(MAX_AGE_S),
            },
        )

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if not self.allowed(origin):
            return
        assert origin is not None
        response.headers["Access-Control-Allow-Origin"] = "*" if self.any else origin
        if not self.any:
            response.headers.add("Vary", "Origin")
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
