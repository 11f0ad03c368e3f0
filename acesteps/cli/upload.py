"""``acesteps upload FILE``: send an audio file to the HTTP API (``POST /api/uploads``), to
edit it (`acesteps.editing`): its CID is what ``acesteps generate --task TASK
--source-upload CID`` takes (``generate --source-file FILE`` uploads and uses it at once).

Prints the API's answer (cid, audioHash, duration, sampleRate, channels, format, sizeBytes)
as JSON on stdout and a line for a person on stderr, saying whether the audioHash is the
keccak256 of the file sent. Exit codes: 0 uploaded; 2 the file cannot be read, or the API
refused it (413 too large, 415 not audio it reads, 422 too long or too short); 3 the API
could not be reached or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any, TextIO

from acesteps.cli.api import ApiClient, ApiError
from acesteps.cli.connection import add_connection_arguments, with_api
from acesteps.editing import EDIT_TASKS
from acesteps.hashing import keccak256_hex

__all__ = ["add_arguments", "run_cli", "send", "upload"]


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def send(api: ApiClient, name: str, data: bytes, *, stderr: TextIO) -> dict[str, Any]:
    """Upload ``data`` as the file ``name``; the API's answer, told on ``stderr``."""
    answer = await api.upload(name, data, _content_type(name))
    ours = keccak256_hex(data)
    same = (
        "the file's keccak256"
        if str(answer["audioHash"]).lower() == ours
        else f"NOT the file's keccak256 {ours}: the API stored other bytes"
    )
    length = answer.get("duration")
    seconds = f"{length:g} s " if isinstance(length, int | float) else ""
    print(
        f"uploaded {name}: CID {answer['cid']}, {seconds}{answer.get('format') or ''}".rstrip()
        + f", audioHash {answer['audioHash']} ({same})",
        file=stderr,
        flush=True,
    )
    return answer


async def upload(api: ApiClient, path: Path, *, stdout: TextIO, stderr: TextIO) -> int:
    """Upload the file at ``path`` and print the answer; the exit code."""
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=stderr)
        return 2
    try:
        answer = await send(api, path.name, data, stderr=stderr)
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=stderr)
        return exc.exit_code
    print(json.dumps(answer), file=stdout, flush=True)
    tasks = "|".join(EDIT_TASKS)
    print(
        f"edit it: acesteps generate PROMPT --task {tasks} --source-upload {answer['cid']} ...",
        file=stderr,
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", type=Path, help="an audio file (mp3, wav, flac)")
    add_connection_arguments(parser)


async def run_cli(args: argparse.Namespace) -> int:
    """Run ``acesteps upload``; its exit code."""
    return await with_api(
        args, lambda api: upload(api, args.file, stdout=sys.stdout, stderr=sys.stderr)
    )
