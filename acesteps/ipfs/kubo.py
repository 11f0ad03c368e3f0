"""A thin async client of the Kubo RPC API (``/api/v0``), on aiohttp.

Why not ``ipfshttpclient``: its last release (0.7.0, 2021) refuses any Kubo newer than 0.7
with ``VersionMismatch``, is synchronous and unmaintained. The few endpoints used here are
plain POSTs, so a small aiohttp client is both smaller and correct.

Errors form one hierarchy: `KuboError`, with `KuboUnavailable` (retry later: connection
refused or reset, timeouts, a 5xx that is not Kubo's own error answer, a stream cut short)
and `KuboRequestError` (permanent: Kubo ran the command and refused it). Kubo reports an
ordinary command error ("invalid path", "not pinned", "block not found locally") as HTTP
**500** with a JSON body ``{"Message", "Code": 0, "Type": "error"}`` (only ``Code`` 1 gets a
400), so such a body, not the status, is what makes an error permanent.

Kubo reports a failure that happens after it has begun a 200 response (say, a block missing
halfway through ``cat``) only in an ``X-Stream-Error`` HTTP *trailer*. aiohttp parses
trailers and drops them, so the client checks what it can see: ``cat`` compares the bytes
received with the ``X-Content-Length`` header, ``add`` requires its final result object.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from acesteps.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS

__all__ = [
    "ADD_PARAMS",
    "AddResult",
    "KuboClient",
    "KuboError",
    "KuboRequestError",
    "KuboUnavailable",
]

# Every import parameter is explicit: a node's Import.* config would otherwise change the CID
# (Kubo's `unixfs-v1-2025` profile, for one, sets 1 MiB chunks and 1024 links per node).
# They must match `acesteps.ipfs.unixfs`.
ADD_PARAMS: Final[dict[str, str]] = {
    "cid-version": "1",
    "raw-leaves": "true",
    "hash": "sha2-256",
    "chunker": f"size-{CHUNK_SIZE}",
    "trickle": "false",  # balanced layout; Import.UnixFSDAGLayout could say "trickle"
    "max-file-links": str(MAX_LINKS),  # Import.UnixFSFileMaxLinks could change it
    "quieter": "true",  # one result object: the file's root
    "progress": "false",  # no progress objects in the stream
}


class KuboError(Exception):
    """Root of the errors of this client."""


class KuboUnavailable(KuboError):
    """Kubo could not be reached or did not finish answering; retrying may succeed."""


class KuboRequestError(KuboError):
    """Kubo refused the request; retrying it unchanged will fail again."""

    def __init__(self, endpoint: str, status: int, message: str, code: int | None = None) -> None:
        super().__init__(f"{endpoint}: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class AddResult:
    cid: str
    size: int
    """Kubo's ``Size``: bytes of all the DAG's blocks (file bytes plus dag-pb nodes)."""


class KuboClient:
    """Client of one Kubo node; use as ``async with KuboClient(url) as kubo: ...``.

    A session passed in stays the caller's; otherwise one is created on first use and closed
    by `close`. ``timeout_s`` bounds connecting and each wait for response bytes, not a whole
    transfer, so large files stream as long as the node keeps answering.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self._api = base_url.rstrip("/") + "/api/v0/"
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_s, sock_read=timeout_s
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def version(self) -> str:
        """The node's version, e.g. ``"0.43.1"``."""
        return str((await self._json("version", {}))["Version"])

    async def add(
        self,
        data: bytes | AsyncIterable[bytes],
        *,
        pin: bool = True,
        only_hash: bool = False,
    ) -> AddResult:
        """Add one file; an async iterable of chunks is uploaded as it is produced.

        With ``only_hash`` the node computes the CID and stores nothing (and pins nothing).
        """
        params = {**ADD_PARAMS, "pin": _flag(pin), "only-hash": _flag(only_hash)}
        form = aiohttp.MultipartWriter("form-data")
        part = form.append(data, {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="file", filename="file")
        async with self._post("add", params, form) as resp:
            body = await resp.read()
        lines = body.splitlines()
        result = json.loads(lines[-1]) if lines else {}
        if "Hash" not in result:
            raise KuboUnavailable(f"add: the response ended without a result: {body[:200]!r}")
        return AddResult(cid=result["Hash"], size=int(result["Size"]))

    async def block_put(self, data: bytes, *, pin: bool = True) -> str:
        """Store ``data`` as one raw block named by its keccak-256 (CIDv1); its CID.

        For small documents whose CID must follow from their keccak256 (the generation
        manifests: `acesteps.ipfs.unixfs.keccak_block_cid`); Kubo refuses blocks over 1 MiB.
        """
        params = {"cid-codec": "raw", "mhtype": "keccak-256", "mhlen": "32", "pin": _flag(pin)}
        form = aiohttp.MultipartWriter("form-data")
        part = form.append(data, {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="file", filename="block")
        async with self._post("block/put", params, form) as resp:
            result = json.loads(await resp.read())
        return str(result["Key"])

    async def pin_add(self, cid: str) -> None:
        """Pin ``cid`` and everything under it (a recursive pin)."""
        await self._json("pin/add", {"arg": cid, "recursive": "true"})

    async def pin_ls(self, cid: str) -> bool:
        """Whether ``cid`` is pinned recursively (as `add` and `pin_add` pin)."""
        try:
            keys = (await self._json("pin/ls", {"arg": cid, "type": "recursive"}))["Keys"]
        except KuboRequestError as exc:
            if "is not pinned" in exc.message:
                return False
            raise
        return bool(keys)

    async def cat(self, cid: str) -> bytes:
        """The whole content of the file ``cid``."""
        return b"".join([chunk async for chunk in self.cat_iter(cid)])

    async def cat_iter(self, cid: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The content of the file ``cid`` in pieces of at most ``chunk_size`` bytes.

        A stream that breaks off raises `KuboUnavailable` after its last piece, so a caller
        that writes pieces out must discard what it wrote when iteration raises.
        """
        async with self._post("cat", {"arg": cid}) as resp:
            expected = resp.headers.get("X-Content-Length")
            received = 0
            async for chunk in resp.content.iter_chunked(chunk_size):
                received += len(chunk)
                yield chunk
            if expected is not None and received != int(expected):
                raise KuboUnavailable(
                    f"cat {cid}: the stream ended after {received} of {expected} bytes "
                    "(Kubo gives the reason in an X-Stream-Error trailer, which aiohttp drops)"
                )

    async def _json(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        async with self._post(endpoint, params) as resp:
            body = await resp.read()
        result: dict[str, Any] = json.loads(body)
        return result

    @asynccontextmanager
    async def _post(
        self, endpoint: str, params: dict[str, str], data: Any = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to ``endpoint``; yields a 200 response, raises a `KuboError` otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self._api + endpoint, params=params, data=data, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    await _raise_for_answer(endpoint, resp)
                yield resp
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise KuboUnavailable(f"{endpoint}: {type(exc).__name__}: {exc}") from exc


async def _raise_for_answer(endpoint: str, resp: aiohttp.ClientResponse) -> None:
    body = await resp.text(errors="replace")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("Type") == "error":
        raise KuboRequestError(
            endpoint, resp.status, str(answer.get("Message")), answer.get("Code")
        )
    if resp.status >= 500:
        raise KuboUnavailable(f"{endpoint}: HTTP {resp.status}: {body[:200]}")
    raise KuboRequestError(endpoint, resp.status, body.strip()[:200])


def _flag(value: bool) -> str:
    return "true" if value else "false"
