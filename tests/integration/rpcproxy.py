"""A JSON-RPC proxy in front of an anvil that can hold an answer back, so a test can land a
reorg between two reads of a client (the answer it gets describes a chain that is gone), and
can answer as a troubled provider does (`FAULTS`: rate limits, 5xx, hangs, cut bodies).

Runs on the test's event loop: start it, point the service under test at ``url``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.integration.anvil import free_port

__all__ = ["FAULTS", "Held", "RpcProxy"]

RATE_LIMITED = {"code": -32005, "message": "daily request count exceeded, request rate limited"}
FAULTS = ("rate_limited", "http_429", "http_502", "truncated", "hang")
"""What `RpcProxy.fail` can answer instead of the node's answer."""


@dataclass
class Held:
    """One request whose answer waits: `arrived` when it came, `release` to answer."""

    matches: Callable[[dict[str, Any]], bool]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    request: dict[str, Any] | None = None

    def release(self) -> None:
        self.released.set()


class RpcProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.holds: list[Held] = []
        self.faults: list[str] = []
        self.faulted = 0
        self.hang_s = 5.0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> RpcProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        for held in self.holds:
            held.release()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def hold_next(self, matches: Callable[[dict[str, Any]], bool]) -> Held:
        """Hold the answer to the next request that ``matches`` (its JSON-RPC object)."""
        held = Held(matches)
        self.holds.append(held)
        return held

    def fail(self, faults: list[str]) -> None:
        """Answer the next requests with ``faults`` (names from `FAULTS`), one each."""
        self.faults += faults

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.faults:
            self.faulted += 1
            return await self._fault(self.faults.pop(0), body)
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as answer:
            payload = await answer.read()
            status = answer.status
        call = json.loads(body)
        for held in list(self.holds):
            if isinstance(call, dict) and held.matches(call):
                self.holds.remove(held)
                held.request = call
                held.arrived.set()
                await held.released.wait()  # the answer read before is now stale
                break
        return web.Response(body=payload, status=status, content_type="application/json")

    async def _fault(self, fault: str, body: bytes) -> web.Response:
        call = json.loads(body)
        ident = call.get("id") if isinstance(call, dict) else None
        if fault == "rate_limited":
            error = {"jsonrpc": "2.0", "id": ident, "error": RATE_LIMITED}
            return web.json_response(error)
        if fault == "http_429":
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "1"})
        if fault == "http_502":
            return web.Response(status=502, text="<html>Bad Gateway</html>")
        if fault == "truncated":
            return web.Response(
                body=b'{"jsonrpc": "2.0", "id": 1, "res', content_type="application/json"
            )
        if fault == "hang":
            await asyncio.sleep(self.hang_s)  # past the client's timeout
            return web.Response(status=504)
        raise ValueError(f"unknown fault {fault!r}")
