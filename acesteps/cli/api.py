"""The HTTP API as the command line uses it: one session, the endpoints, the API's errors.

It speaks only HTTP and JSON: it imports nothing from the services.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from acesteps.cli.sse import sse_events
from acesteps.hashing import Keccak256
from acesteps.types import parse_request_id

__all__ = ["ApiClient", "ApiError", "Record", "open_session"]

Record = dict[str, Any]
Sleep = Callable[[float], Awaitable[None]]

RETRIES: Final = 3  # a 429 (or 503) with Retry-After is retried this many times


class ApiError(Exception):
    """No success: the API's ``{"error": {"code", "message", "field"?}}``, or no answer at all
    (``status`` None)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    @property
    def exit_code(self) -> int:
        return 2 if self.status is not None and 400 <= self.status < 500 else 3


# ---------------------------------------------------------------- HTTP


def open_session(api_key: str | None) -> aiohttp.ClientSession:
    headers = {"User-Agent": "acesteps-cli"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    # No total timeout: a generation takes minutes. The event stream sends a keep-alive every
    # 15 s, so a minute of silence means a dead connection.
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    return aiohttp.ClientSession(headers=headers, timeout=timeout)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return 1.0


async def _error_of(resp: aiohttp.ClientResponse) -> ApiError:
    retry = _retry_after(resp.headers.get("Retry-After"))
    try:
        body = await resp.json(content_type=None)
        error = body["error"]
        return ApiError(
            resp.status, str(error["code"]), str(error["message"]), error.get("field"), retry
        )
    except (ValueError, TypeError, KeyError, AttributeError, aiohttp.ClientError):
        return ApiError(resp.status, f"http_{resp.status}", resp.reason or "error", None, retry)


def _record(body: object) -> Record:
    """A `Generation` record as the API writes it; anything else is not the API's answer."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("id"), str)
        or parse_request_id(body["id"]) is None
        or not isinstance(body.get("status"), str)
    ):
        raise ApiError(None, "bad_response", f"not a generation record: {str(body)[:200]}")
    return body


def _unreachable(what: str, exc: BaseException) -> ApiError:
    return ApiError(None, "unreachable", f"{what}: {str(exc) or type(exc).__name__}")


class ApiClient:
    """The endpoints the CLI uses, on one session (which carries the API key)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        retries: int = RETRIES,
        sleep: Sleep = asyncio.sleep,
        notify: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.sleep = sleep
        self.notify = notify

    async def _open(
        self, method: str, path: str, *, data: Callable[[], Any] | None = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """A successful response, still to be read and released by the caller; ``data``
        makes the body of each attempt (a multipart form can be sent only once)."""
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                body = {} if data is None else {"data": data()}
                resp = await self.session.request(method, url, **kwargs, **body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _unreachable(f"{method} {url}", exc) from None
            if resp.status < 400:
                return resp
            try:
                error = await _error_of(resp)
            finally:
                resp.release()
            if error.status not in (429, 503) or error.retry_after is None:
                raise error
            if attempt >= self.retries:
                raise error
            attempt += 1
            self.notify(f"{error.code}: retrying in {error.retry_after:g} s")
            await self.sleep(error.retry_after)

    async def _json(self, method: str, path: str, **kwargs: Any) -> object:
        resp = await self._open(method, path, **kwargs)
        async with resp:
            try:
                body: object = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _unreachable(f"{method} {resp.url}", exc) from None
            except ValueError:
                raise ApiError(None, "bad_response", f"{method} {resp.url}: not JSON") from None
        return body

    async def _record(self, method: str, path: str, **kwargs: Any) -> Record:
        return _record(await self._json(method, path, **kwargs))

    async def page(self, params: Mapping[str, str]) -> tuple[list[Record], str | None]:
        """One page of ``GET /api/generations``: its records and the next page's cursor."""
        body = await self._json("GET", "/api/generations", params=dict(params))
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ApiError(None, "bad_response", f"not a page of records: {str(body)[:200]}")
        cursor = body.get("nextCursor")
        records = [_record(item) for item in body["items"]]
        return records, cursor if isinstance(cursor, str) else None

    @staticmethod
    def _path(request_id: str, tail: str = "") -> str:
        rid = parse_request_id(request_id)
        if rid is None:
            raise ApiError(400, "invalid_id", "a request id is 0x + 64 hex digits", "id")
        return f"/api/generations/{rid}{tail}"

    async def submit(
        self,
        body: Mapping[str, Any],
        idempotency_key: str | None = None,
        cancel_after: str | None = None,
    ) -> Record:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        if cancel_after is not None:
            headers["Cancel-After"] = cancel_after
        return await self._record(
            "POST", "/api/generate", params={"wait": "0"}, json=dict(body), headers=headers
        )

    async def upload(self, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        """``POST /api/uploads``, ``data`` as the multipart part ``file``: the API's answer
        (cid, audioHash, duration, sampleRate, channels, format, sizeBytes)."""

        def form() -> aiohttp.FormData:
            built = aiohttp.FormData()
            built.add_field("file", data, filename=name, content_type=content_type)
            return built

        body = await self._json("POST", "/api/uploads", data=form)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("cid", "audioHash")
        ):
            raise ApiError(None, "bad_response", f"not an upload's answer: {str(body)[:200]}")
        return body

    async def get(self, request_id: str) -> Record:
        return await self._record("GET", self._path(request_id))

    async def cancel(self, request_id: str) -> Record:
        """Ask the API to stop the request; the record as it was when the cancel was sent."""
        return await self._record("POST", self._path(request_id, "/cancel"))

    async def events(self, request_id: str) -> AsyncIterator[tuple[str, Record]]:
        """``("status", record)`` per status event and ``("progress", steps)`` per progress
        event (stepsDone, stepsTotal, percent, etaS); aiohttp and JSON errors break the
        stream."""
        headers = {"Accept": "text/event-stream"}
        resp = await self._open("GET", self._path(request_id, "/events"), headers=headers)
        async with resp:
            async for event in sse_events(resp.content.iter_any()):
                if event.event == "status":
                    yield "status", _record(json.loads(event.data))
                elif event.event == "progress":
                    steps = json.loads(event.data)
                    if isinstance(steps, dict):
                        yield "progress", steps

    async def download(self, request_id: str, dest: Path) -> str:
        """Write the audio to ``dest``; its keccak256 (``0x`` + hex)."""
        resp = await self._open("GET", self._path(request_id, "/audio"))
        digest = Keccak256()
        async with resp:
            try:
                with dest.open("wb") as f:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        digest.update(chunk)
                        f.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _unreachable(f"GET {resp.url}", exc) from None
        return digest.hexdigest()
