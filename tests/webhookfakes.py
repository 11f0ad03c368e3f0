"""Test doubles for webhooks: DNS that answers from a table, a connector that connects only to
127.0.0.1, and a receiver that verifies what it gets with the independent ``standardwebhooks``
package. With them no webhook test sends a packet anywhere but 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks import Webhook

__all__ = ["LoopbackOnlyConnector", "MapResolver", "Received", "Receiver", "loopback_connector"]

LOOPBACK = "127.0.0.1"


class MapResolver(AbstractResolver):
    """Names to fixed addresses: from ``hosts``, or from the JSON file ``path`` read at every
    lookup (so a test can change an answer between two lookups). Any other name does not
    resolve; no DNS server is ever asked."""

    def __init__(self, hosts: dict[str, list[str]] | None = None, path: Path | None = None):
        self.hosts = hosts or {}
        self.path = path
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        self.asked.append(name)
        hosts = json.loads(self.path.read_text()) if self.path else self.hosts
        found: list[ResolveResult] = []
        for address in hosts.get(name, ()):
            ip = ipaddress.ip_address(address)
            fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family in (socket.AF_INET, socket.AF_INET6) and family != fam:
                continue
            found.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        if not found:
            raise OSError(socket.EAI_NONAME, f"{host} is no test name")
        return found

    async def close(self) -> None:
        pass


class LoopbackOnlyConnector(aiohttp.TCPConnector):
    """Connects to 127.0.0.1 only. Asked for any other address, it connects nowhere: it notes
    the addresses in ``violations`` (and in the file ``record``, for a test whose API runs in
    another process) and raises AssertionError."""

    def __init__(self, *args: Any, record: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record
        self.violations: list[str] = []

    async def _wrap_create_connection(self, *args: Any, addr_infos: Any, **kwargs: Any) -> Any:
        wrong = [info[4][0] for info in addr_infos if info[4][0] != LOOPBACK]
        if wrong:
            self.violations.extend(wrong)
            if self.record is not None:
                with self.record.open("a") as out:
                    out.write(json.dumps(wrong) + "\n")
            raise AssertionError(f"a webhook tried to connect to {wrong}")
        return await super()._wrap_create_connection(*args, addr_infos=addr_infos, **kwargs)


def loopback_connector(record: Path | None = None) -> Any:
    """A `Deliverer` connector factory making `LoopbackOnlyConnector` s."""

    def make(resolver: AbstractResolver) -> aiohttp.BaseConnector:
        return LoopbackOnlyConnector(
            resolver=resolver, use_dns_cache=False, force_close=True, record=record
        )

    return make


@dataclass
class Received:
    path: str
    id: str
    timestamp: int
    body: dict[str, Any]


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that verifies each message with ``standardwebhooks`` and
    the secret of the path's key (``/<name>``: any name); ``answers`` maps a path to the
    statuses to answer in turn (``"hang"``: answer nothing until the sender gives up), then 204.
    A message that does not verify is answered 400 and kept in ``rejected``."""

    secret: str
    port: int = 0
    answers: dict[str, list[int | str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    ids: list[tuple[str, str]] = field(default_factory=list)
    """(path, webhook-id) of every attempt, answered or not."""
    _runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.attempts[path] = self.attempts.get(path, 0) + 1
        self.ids.append((path, request.headers.get("webhook-id", "")))
        todo = self.answers.get(path, [])
        if todo:
            answer = todo.pop(0)
            if answer == "hang":
                await asyncio.sleep(3600)
            return web.Response(status=int(answer))
        data = await request.read()
        try:
            body = Webhook(self.secret).verify(data, dict(request.headers))
        except Exception as exc:
            self.rejected.append(f"{path}: {exc}")
            return web.Response(status=400)
        self.received.append(
            Received(
                path,
                request.headers["webhook-id"],
                int(request.headers["webhook-timestamp"]),
                body,
            )
        )
        return web.Response(status=204)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, self.port)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def types(self, path: str) -> list[str]:
        return [r.body["type"] for r in self.received if r.path == path]
