"""One JSON-RPC endpoint after another: an `AsyncHTTPProvider` over several URLs.

A call goes to the current URL; when it cannot answer (connection refused, a timeout, an
HTTP error such as 429 or 502, a body that is not JSON-RPC, or a JSON-RPC error that says it
is rate-limited) the same call is tried on the next URL, and that one stays current
(sticky: the nodes behind two providers need not be at the same head, and jumping back and
forth would make the head seem to move backwards more often). When every URL fails, the
last error is raised, and the caller's own retries apply. The readers (the listener, the
API) use it; the publisher does not, as its provider never re-sends a raw transaction by
itself (`publisher.provider`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from web3 import AsyncHTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from acesteps.rpcerrors import rate_limited_text

__all__ = ["FailoverHTTPProvider"]

log = logging.getLogger(__name__)


class FailoverHTTPProvider(AsyncHTTPProvider):
    def __init__(self, urls: Sequence[str], request_kwargs: dict[str, Any] | None = None):
        if not urls:
            raise ValueError("at least one RPC URL")
        # No retries of web3's own on one URL: the next URL is the retry.
        super().__init__(urls[0], request_kwargs=request_kwargs, exception_retry_configuration=None)
        self.urls = list(urls)
        self.current = 0

    def _next(self, why: str) -> None:
        failed = self.urls[self.current]
        self.current = (self.current + 1) % len(self.urls)
        self.endpoint_uri = self.urls[self.current]  # type: ignore[assignment]
        log.warning("RPC %s %s; now using %s", failed, why, self.endpoint_uri)

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        error: BaseException | None = None
        response: RPCResponse | None = None
        for _ in range(len(self.urls)):
            try:
                response = await super().make_request(method, params)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                error, response = exc, None
                self._next(f"failed ({type(exc).__name__})")
                continue
            problem = response.get("error") if isinstance(response, dict) else None
            if problem and rate_limited_text(str(problem)) and len(self.urls) > 1:
                error = None
                self._next("is rate-limited")
                continue
            return response
        if response is not None:
            return response  # every URL rate-limited: the caller backs off on this answer
        assert error is not None
        raise error
