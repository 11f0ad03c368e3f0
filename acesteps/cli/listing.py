"""``acesteps list``: the caller's requests (or an address's on-chain ones), newest first."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from acesteps.cli.api import ApiClient, ApiError, Record
from acesteps.cli.connection import add_connection_arguments, with_api

__all__ = ["add_arguments", "list_records", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", help="comma-separated statuses (completed,failed,...)")
    parser.add_argument("--source", choices=["chain", "http"])
    parser.add_argument("--since", help="created at or after (ISO 8601)")
    parser.add_argument("--until", help="created before (ISO 8601)")
    parser.add_argument("--requester", help="an address: its on-chain requests")
    parser.add_argument("--limit", type=int, default=20, help="records to show (default 20)")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    add_connection_arguments(parser)


def render(record: Record) -> str:
    prompt = str(record.get("prompt") or "-")
    prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    created = str(record.get("createdAt") or "-")[:19]
    return f"{record['id']}  {record['status']:<10}  {created}  {prompt}"


async def list_records(
    api: ApiClient, args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO
) -> int:
    params = {
        name: str(getattr(args, name))
        for name in ("status", "source", "since", "until", "requester")
        if getattr(args, name) is not None
    }
    shown, cursor = 0, None
    try:
        while shown < args.limit:
            page_params = {**params, "limit": str(min(200, args.limit - shown))}
            if cursor:
                page_params["cursor"] = cursor
            records, cursor = await api.page(page_params)
            for record in records:
                print(json.dumps(record) if args.json else render(record), file=stdout)
            shown += len(records)
            if cursor is None:
                break
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=stderr)
        return exc.exit_code
    return 0


async def run_cli(args: argparse.Namespace) -> int:
    return await with_api(
        args, lambda api: list_records(api, args, stdout=sys.stdout, stderr=sys.stderr)
    )
