"""``acesteps generate`` and ``acesteps status``: the HTTP API from the command line.

``generate`` submits ``POST /api/generate?wait=0``, follows the request's server-sent events
(``GET /api/generations/{id}/events``; when the stream breaks, it polls
``GET /api/generations/{id}`` every 2 s instead), downloads ``/audio`` and checks that the
keccak256 of the bytes is the record's ``audioHash``. With ``--variations N`` it follows the
request itself and prints its variations' ids (``variation K ID``), requests of their own. An
edit (``--task``, `acesteps.editing`) prints what it edits (``edit: extend of track ID``);
with ``--source-file FILE`` the file is uploaded first (`acesteps.cli.upload`) and is the
edit's ``sourceUpload``. ``status`` prints one record.

Exit codes: 0 done; 1 the request failed, was canceled or revoked, the audio does not match
its hash, or (``status``) there is no such request; 2 the API refused the request (4xx); 3 the
API could not be reached or failed (5xx, or an answer that is not the API's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import aiohttp

from acesteps.cli.api import ApiClient, ApiError, Record, Sleep, open_session
from acesteps.cli.connection import add_connection_arguments, connection, notify, with_api
from acesteps.cli.options import add_option_arguments, options_body
from acesteps.cli.progressbar import Progress
from acesteps.types import AUDIO_FORMATS

__all__ = [
    "GenerateOptions",
    "add_generate_arguments",
    "add_status_arguments",
    "edit_line",
    "follow",
    "generate",
    "render_status",
    "run_generate_cli",
    "run_status_cli",
    "status",
]

FINAL: Final = frozenset({"completed", "failed", "canceled", "revoked"})
POLL_S: Final = 2.0
POLL_FAILURES: Final = 5  # consecutive unreachable/5xx polls tolerated before giving up


@dataclass(frozen=True)
class GenerateOptions:
    """What ``generate`` sends (``body``: the request options, API names) and does after."""

    body: dict[str, Any] = field(default_factory=dict)
    wait: bool = True
    out: Path | None = None
    idempotency_key: str | None = None
    cancel_after: str | None = None
    source_file: Path | None = None
    """Uploaded first; its CID is the body's ``sourceUpload``."""


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
        async for kind, record in api.events(request_id):
            if kind == "progress":
                progress.steps(record.get("percent"), record.get("etaS"))
                continue
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
    body = opts.body
    try:
        # 0. with --source-file: the edit's source, uploaded
        if opts.source_file is not None:
            try:
                data = await asyncio.to_thread(opts.source_file.read_bytes)
            except OSError as exc:
                print(f"error: --source-file: {exc.strerror or exc}", file=stderr)
                return 2
            from acesteps.cli.upload import send  # which imports this module

            uploaded = await send(api, opts.source_file.name, data, stderr=stderr)
            body = {**body, "sourceUpload": uploaded["cid"]}
        # 1. submit (the API answers at once with the queued record)
        record = await api.submit(body, opts.idempotency_key, opts.cancel_after)
        request_id: str = record["id"].lower()
        print(f"request {request_id}", file=stderr, flush=True)
        if (edit := edit_line(record)) is not None:
            print(f"edit: {edit}", file=stderr, flush=True)
        # With --variations: the other tracks are requests of their own (acesteps status ID).
        for k, child in enumerate(record.get("children") or (), start=1):
            print(f"variation {k} {child}", file=stderr, flush=True)
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
        fmt = record.get("format")
        fmt = fmt if fmt in AUDIO_FORMATS else opts.body.get("format", "mp3")
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


def edit_line(record: Record) -> str | None:
    """What an edit edits, from its record's ``editSource`` (``extend of track ID (audioHash
    H)``, ``cover of upload CID (...)``); None for a request that is no edit."""
    source = record.get("editSource")
    if not isinstance(source, dict):
        return None
    if source.get("kind") == "track":
        what = f"track {source.get('requestId')}"
    else:
        what = f"upload {source.get('cid')}"
    return f"{record.get('task') or 'edit'} of {what} (audioHash {source.get('audioHash')})"


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
    if (edit := edit_line(record)) is not None:
        rows.insert(3, ("edit", edit))
    if isinstance(record.get("queuePosition"), int):
        rows.insert(2, ("queue", f"#{record['queuePosition']}"))
    steps = record.get("progress")
    if record["status"] == "generating" and isinstance(steps, dict):
        eta = steps.get("etaS")
        left = f", ~{eta:.0f}s left" if isinstance(eta, int | float) else ""
        done = f"{steps.get('stepsDone')}/{steps.get('stepsTotal')} steps"
        rows.insert(2, ("progress", f"{steps.get('percent')}% ({done}{left})"))
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


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    add_option_arguments(parser)  # the prompt, --duration, --tags, ...: one per request option
    parser.add_argument("--lyrics-file", type=Path, help="read the lyrics from a UTF-8 file")
    parser.add_argument(
        "--source-file",
        type=Path,
        metavar="FILE",
        help="with --task: upload this audio file first (acesteps upload) and edit it",
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the request, download and check the audio (default); --no-wait prints "
        "the queued record and returns",
    )
    parser.add_argument("--out", type=Path, help="where to save the audio (default ./ID.FORMAT)")
    parser.add_argument("--idempotency-key", help="the same key returns the same request")
    parser.add_argument(
        "--cancel-after",
        metavar="DURATION",
        help="cancel the request if it is not published within DURATION (90, 90s, 5m, 1h30m)",
    )
    add_connection_arguments(parser)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="request id (0x + 64 hex)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    add_connection_arguments(parser)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    """The request options given (ValueError: they cannot make one request)."""
    body = options_body(args)
    if args.lyrics_file is not None:
        if "lyrics" in body:
            raise ValueError("give --lyrics or --lyrics-file, not both")
        try:
            body["lyrics"] = args.lyrics_file.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"--lyrics-file: {exc}") from None
    if args.source_file is not None:
        if "task" not in body:
            raise ValueError("--source-file is the source of an edit: give --task too")
        if "sourceTrack" in body or "sourceUpload" in body:
            raise ValueError("give one source: --source-file, --source-track or --source-upload")
    return body


async def run_generate_cli(args: argparse.Namespace) -> int:
    """Run ``acesteps generate``; its exit code."""
    try:
        url, key = connection(args)
        body = _body(args)
    except (ApiError, ValueError) as exc:
        print(f"error: {exc.message if isinstance(exc, ApiError) else exc}", file=sys.stderr)
        return 2
    opts = GenerateOptions(
        body=body,
        wait=args.wait,
        out=args.out,
        idempotency_key=args.idempotency_key,
        cancel_after=args.cancel_after,
        source_file=args.source_file,
    )
    async with open_session(key) as session:
        api = ApiClient(session, url, notify=notify)
        return await generate(api, opts, stdout=sys.stdout, stderr=sys.stderr)


async def run_status_cli(args: argparse.Namespace) -> int:
    """Run ``acesteps status``; its exit code."""
    return await with_api(
        args,
        lambda api: status(api, args.id, as_json=args.json, stdout=sys.stdout, stderr=sys.stderr),
    )
