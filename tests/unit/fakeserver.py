"""A fake of the HTTP API served on loopback, with the CLI's client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

from acesteps.cli.api import ApiClient, open_session

__all__ = ["Served", "serving"]


class _Fake(Protocol):
    def app(self) -> web.Application: ...


F = TypeVar("F", bound=_Fake)


@dataclass
class Served(Generic[F]):
    fake: F
    url: str
    api: ApiClient
    slept: list[float]
    """The client's back-off sleeps, recorded instead of slept."""


@asynccontextmanager
async def serving(fake: F) -> AsyncIterator[Served[F]]:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    url = str(server.make_url("")).rstrip("/")
    try:
        async with open_session("s3cret") as session:
            yield Served(fake, url, ApiClient(session, url, sleep=sleep), slept)
    finally:
        await server.close()
