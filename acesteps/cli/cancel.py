"""``acesteps cancel ID``: ask the HTTP API to stop a request this API key submitted."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from acesteps.cli.api import ApiClient, ApiError
from acesteps.cli.connection import add_connection_arguments, with_api

__all__ = ["add_arguments", "cancel", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="request id (0x + 64 hex)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    add_connection_arguments(parser)


async def cancel(
    api: ApiClient, request_id: str, *, as_json: bool, stdout: TextIO, stderr: TextIO
) -> int:
    """0 when the cancel is accepted (the record then turns ``canceled``, unless its track
    was registered first: ``acesteps status`` tells); 1 for an unknown id or one that ended."""
    try:
        record = await api.cancel(request_id)
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=stderr)
        return 1 if exc.status in (404, 409) else exc.exit_code
    if as_json:
        print(json.dumps(record), file=stdout)
    else:
        print(f"{record['id']}: cancel accepted (it was {record['status']})", file=stdout)
    return 0


async def run_cli(args: argparse.Namespace) -> int:
    return await with_api(
        args,
        lambda api: cancel(api, args.id, as_json=args.json, stdout=sys.stdout, stderr=sys.stderr),
    )
