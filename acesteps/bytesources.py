"""Where a verifier reads content from: a Kubo node, any HTTP gateway, or a local file.

None of them has to be trusted: what they return is hashed and compared with the chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import aiohttp

from acesteps.ipfs.kubo import KuboClient, KuboError
from acesteps.ipfs.unixfs import CHUNK_SIZE

__all__ = ["ByteSource", "FileSource", "GatewaySource", "KuboSource", "Unreachable", "read_all"]


class ByteSource(Protocol):
    def describe(self, cid: str) -> str: ...

    def chunks(self, cid: str) -> AsyncIterator[bytes]: ...


class Unreachable(Exception):
    """The bytes could not be read; the verdict is UNKNOWN."""


class KuboSource:
    """``cat`` over a Kubo node's RPC API."""

    def __init__(self, kubo: KuboClient, url: str) -> None:
        self._kubo, self._url = kubo, url

    def describe(self, cid: str) -> str:
        return f"Kubo RPC {self._url} (cat {cid})"

    async def chunks(self, cid: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._kubo.cat_iter(cid):
                yield chunk
        except KuboError as exc:
            raise Unreachable(str(exc)) from exc


class GatewaySource:
    """``GET /ipfs/<cid>`` on an HTTP gateway, which need not be trusted: we rehash."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout_s: float = 60.0):
        self._session, self._url = session, url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(sock_connect=timeout_s, sock_read=timeout_s)

    def describe(self, cid: str) -> str:
        return f"gateway {self._url}/ipfs/{cid}"

    async def chunks(self, cid: str) -> AsyncIterator[bytes]:
        try:
            async with self._session.get(f"{self._url}/ipfs/{cid}", timeout=self._timeout) as r:
                if r.status != 200:
                    text = (await r.text(errors="replace")).strip()[:200]
                    raise Unreachable(f"HTTP {r.status} from the gateway: {text}")
                async for chunk in r.content.iter_chunked(CHUNK_SIZE):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"gateway: {type(exc).__name__}: {exc}") from exc


class FileSource:
    """A local file, whatever the CID: the check is of these bytes against the chain."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def describe(self, cid: str) -> str:
        return f"file {self._path}"

    async def chunks(self, cid: str) -> AsyncIterator[bytes]:
        # Local reads of a few MB are fast; they block the loop no longer than hashing does.
        try:
            with self._path.open("rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    yield chunk
        except OSError as exc:
            raise Unreachable(f"cannot read {self._path}: {exc.strerror}") from exc


async def read_all(source: ByteSource, cid: str, max_bytes: int) -> bytes:
    """The content of ``cid``; `Unreachable` when it cannot be read or exceeds ``max_bytes``."""
    parts, size = [], 0
    async for chunk in source.chunks(cid):
        size += len(chunk)
        if size > max_bytes:
            raise Unreachable(f"{cid} is larger than {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)
