"""How every API command reaches the API: ``--api-url`` and ``--api-key`` (or the client
settings, ``ACESTEPS_API_URL`` and ``ACESTEPS_API_KEY``), and a client made from them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from acesteps.cli.api import ApiClient, ApiError, open_session

__all__ = ["add_connection_arguments", "connection", "notify", "with_api"]


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="base URL of the API (default: ACESTEPS_API_URL)")
    parser.add_argument("--api-key", help="API key (default: ACESTEPS_API_KEY)")


def connection(args: argparse.Namespace) -> tuple[str, str | None]:
    from acesteps.settings import ClientSettings, load_settings

    settings = load_settings(ClientSettings)
    url = str(args.api_url or settings.api_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ApiError(None, "invalid_request", f"--api-url: expected an http(s) URL, got {url!r}")
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    return url, key


def notify(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def with_api(args: argparse.Namespace, call: Callable[[ApiClient], Awaitable[int]]) -> int:
    """``call`` with a client of the API that ``--api-url``/``--api-key`` (or the settings)
    name; its exit code, or 2 when they are unusable."""
    try:
        url, key = connection(args)
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    async with open_session(key) as session:
        return await call(ApiClient(session, url, notify=notify))
