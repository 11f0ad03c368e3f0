"""Client of the HTTP API: ``acesteps generate`` and ``acesteps status``.

``generate`` submits ``POST /api/generate?wait=0``, follows the request's server-sent events
(``GET /api/generations/{id}/events``; when the stream breaks, it polls
``GET /api/generations/{id}`` every 2 s instead), downloads ``/audio`` and checks that the
keccak256 of the bytes is the record's ``audioHash``. ``status`` prints one record.

Exit codes: 0 done; 1 the request failed or was revoked, the audio does not match its hash, or
(``status``) there is no such request; 2 the API refused the request (4xx); 3 the API could
not be reached or failed (5xx, or an answer that is not the API's).

The client speaks only HTTP and JSON: it imports nothing from the services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import aiohttp

from acesteps.hashing import Keccak256
from acesteps.progressbar import Progress
from acesteps.sse import sse_events

__all__ = [
    "ApiClient",
    "ApiError",
    "GenerateOptions",
    "add_generate_arguments",
    "add_status_arguments",
    "follow",
    "generate",
    "open_session",
    "render_status",
    "run_generate_cli",
    "run_status_cli",
    "status",
]

Record = dict[str, Any]
Sleep = Callable[[float], Awaitable[None]]

FINAL = frozenset({"completed", "failed", "revoked"})
POLL_S = 2.0
RETRIES = 3  # a 429 (or 503) with Retry-After is retried this many times
POLL_FAILURES = 5  # consecutive unreachable/5xx polls tolerated before giving up
_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")


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
        or not _ID.match(body["id"])
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

    async def _open(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """A successful response, still to be read and released by the caller."""
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                resp = await self.session.request(method, url, **kwargs)
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

    async def _record(self, method: str, path: str, **kwargs: Any) -> Record:
        resp = await self._open(method, path, **kwargs)
        async with resp:
            try:
                body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _unreachable(f"{method} {resp.url}", exc) from None
            except ValueError:
                raise ApiError(None, "bad_response", f"{method} {resp.url}: not JSON") from None
        return _record(body)

    @staticmethod
    def _path(request_id: str, tail: str = "") -> str:
        if not _ID.match(request_id):
            raise ApiError(400, "invalid_id", "a request id is 0x + 64 hex digits", "id")
        return f"/api/generations/{request_id.lower()}{tail}"

    async def submit(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Record:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        return await self._record(
            "POST", "/api/generate", params={"wait": "0"}, json=dict(body), headers=headers
        )

    async def get(self, request_id: str) -> Record:
        return await self._record("GET", self._path(request_id))

    async def events(self, request_id: str) -> AsyncIterator[Record]:
        """The records of the ``status`` events; aiohttp and JSON errors break the stream."""
        headers = {"Accept": "text/event-stream"}
        resp = await self._open("GET", self._path(request_id, "/events"), headers=headers)
        async with resp:
            async for event in sse_events(resp.content.iter_any()):
                if event.event == "status":
                    yield _record(json.loads(event.data))

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


# ---------------------------------------------------------------- generate


@dataclass(frozen=True)
class GenerateOptions:
    prompt: str
    duration: float = 30
    lyrics: str = ""
    tags: tuple[str, ...] = ()
    format: Literal["mp3", "wav"] = "mp3"
    seed: int | None = None
    wait: bool = True
    out: Path | None = None
    idempotency_key: str | None = None

    def body(self) -> Record:
        duration = int(self.duration) if float(self.duration).is_integer() else self.duration
        return {
            "prompt": self.prompt,
            "duration": duration,
            "lyrics": self.lyrics,
            "tags": list(self.tags),
            "format": self.format,
            "seed": self.seed,
        }


async def follow(
    api: ApiClient,
    request_id: str,
    progress: Progress,
    *,
    poll_s: float = POLL_S,
    sleep: Sleep = asyncio.sleep,
) -> Record:
    """Wait for a final status: the event stream, then polling if the stream breaks."""
    try:
        async for record in api.events(request_id):
            progress.update(record["status"])
            if record["status"] in FINAL:
                return record
        progress.note(f"the event stream ended early; polling every {poll_s:g} s")
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        progress.note(f"the event stream broke ({reason}); polling every {poll_s:g} s")
    failures = 0
    while True:
        try:
            record = await api.get(request_id)
        except ApiError as exc:
            failures += 1
            if exc.exit_code == 2 or failures > POLL_FAILURES:
                raise
        else:
            failures = 0
            progress.update(record["status"])
            if record["status"] in FINAL:
                return record
        await sleep(poll_s)


async def _ticking(progress: Progress, waiting: Awaitable[Record]) -> Record:
    if not progress.live:
        return await waiting
    failure: Exception | None = None
    async with asyncio.TaskGroup() as tasks:
        ticker = tasks.create_task(progress.ticking())
        try:
            record = await waiting
        except Exception as exc:
            # Raised out of the group it would come out wrapped in an ExceptionGroup.
            failure = exc
        finally:
            ticker.cancel()
    if failure is not None:
        raise failure
    return record


def _failure(record: Record) -> str:
    error = record.get("error")
    if isinstance(error, dict):
        stage = error.get("stage")
        return f"{record['status']}: {error.get('code')}: {error.get('message')} (stage {stage})"
    return f"{record['status']}: request {record['id']} did not complete"


async def generate(
    api: ApiClient,
    opts: GenerateOptions,
    *,
    stdout: TextIO,
    stderr: TextIO,
    progress: Progress | None = None,
    poll_s: float = POLL_S,
    sleep: Sleep = asyncio.sleep,
) -> int:
    """Submit, wait, download and check; the exit code."""
    progress = progress or Progress(stderr)
    try:
        # 1. submit (the API answers at once with the queued record)
        record = await api.submit(opts.body(), opts.idempotency_key)
        request_id: str = record["id"].lower()
        print(f"request {request_id}", file=stderr, flush=True)
        if not opts.wait:
            print(json.dumps(record), file=stdout, flush=True)
            return 0
        # 2. wait for a final status
        try:
            if record["status"] not in FINAL:
                progress.update(record["status"])
                waiting = follow(api, request_id, progress, poll_s=poll_s, sleep=sleep)
                record = await _ticking(progress, waiting)
        finally:
            progress.close()
        if record["status"] != "completed":
            print(json.dumps(record), file=stdout, flush=True)
            print(f"error: {_failure(record)}", file=stderr)
            return 1
        # 3. download, and keep the file only when its hash is the registered one
        expected = record.get("audioHash")
        if not isinstance(expected, str):
            raise ApiError(None, "bad_response", f"request {request_id} has no audioHash")
        fmt = record.get("format") if record.get("format") in ("mp3", "wav") else opts.format
        dest = opts.out or Path(f"{request_id}.{fmt}")
        partial = dest.with_name(dest.name + ".part")
        try:
            got = await api.download(request_id, partial)
            if got != expected.lower():
                print(
                    f"error: audio_mismatch: the file's keccak256 is {got}, "
                    f"the record's audioHash is {expected}",
                    file=stderr,
                )
                return 1
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: cannot write the audio: {exc}", file=stderr)
        return 1
    print(json.dumps({**record, "file": str(dest)}), file=stdout, flush=True)
    return 0


# ---------------------------------------------------------------- status


def render_status(record: Record) -> str:
    rows: list[tuple[str, object]] = [
        ("id", record["id"]),
        ("status", record["status"]),
        ("prompt", record.get("prompt")),
        ("audioHash", record.get("audioHash")),
        ("cid", record.get("cid")),
        ("txHash", record.get("txHash")),
        ("audioUrl", record.get("audioUrl")),
    ]
    error = record.get("error")
    if isinstance(error, dict):
        rows.append(
            ("error", f"{error.get('code')}: {error.get('message')} ({error.get('stage')})")
        )
    return "\n".join(f"{name:<10} {'-' if value is None else value}" for name, value in rows)


async def status(
    api: ApiClient, request_id: str, *, as_json: bool, stdout: TextIO, stderr: TextIO
) -> int:
    """Print one record; 0 when found, 1 when the API does not know the id."""
    try:
        record = await api.get(request_id)
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=stderr)
        return 1 if exc.status == 404 else exc.exit_code
    print(json.dumps(record) if as_json else render_status(record), file=stdout)
    return 0


# ---------------------------------------------------------------- command line


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="base URL of the API (default: ACESTEPS_API_URL)")
    parser.add_argument("--api-key", help="API key (default: ACESTEPS_API_KEY)")


def _seconds(value: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}")
    return seconds


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the track should sound like")
    parser.add_argument("--duration", type=_seconds, default=30, help="seconds (default 30)")
    parser.add_argument("--lyrics-file", type=Path, help="UTF-8 text file with the lyrics")
    parser.add_argument("--tags", default="", help="comma-separated: genre, mood, instruments")
    parser.add_argument("--format", choices=["mp3", "wav"], default="mp3")
    parser.add_argument("--seed", type=int, help="fix it to reproduce a track")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the request, download and check the audio (default); --no-wait prints "
        "the queued record and returns",
    )
    parser.add_argument("--out", type=Path, help="where to save the audio (default ./ID.FORMAT)")
    parser.add_argument("--idempotency-key", help="the same key returns the same request")
    _add_connection_arguments(parser)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="request id (0x + 64 hex)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    _add_connection_arguments(parser)


def _connection(args: argparse.Namespace) -> tuple[str, str | None]:
    from acesteps.settings import ClientSettings, load_settings

    settings = load_settings(ClientSettings)
    url = str(args.api_url or settings.api_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ApiError(None, "invalid_request", f"--api-url: expected an http(s) URL, got {url!r}")
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    return url, key


def _notify(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_generate_cli(args: argparse.Namespace) -> int:
    """Run ``acesteps generate``; its exit code."""
    try:
        url, key = _connection(args)
        lyrics = args.lyrics_file.read_text(encoding="utf-8") if args.lyrics_file else ""
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: --lyrics-file: {exc}", file=sys.stderr)
        return 2
    opts = GenerateOptions(
        prompt=args.prompt,
        duration=args.duration,
        lyrics=lyrics,
        tags=tuple(t.strip() for t in args.tags.split(",") if t.strip()),
        format=args.format,
        seed=args.seed,
        wait=args.wait,
        out=args.out,
        idempotency_key=args.idempotency_key,
    )
    async with open_session(key) as session:
        api = ApiClient(session, url, notify=_notify)
        return await generate(api, opts, stdout=sys.stdout, stderr=sys.stderr)


async def run_status_cli(args: argparse.Namespace) -> int:
    """Run ``acesteps status``; its exit code."""
    try:
        url, key = _connection(args)
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    async with open_session(key) as session:
        api = ApiClient(session, url, notify=_notify)
        return await status(api, args.id, as_json=args.json, stdout=sys.stdout, stderr=sys.stderr)
