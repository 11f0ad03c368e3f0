"""``GET /api/generations``: a requester's records, newest first, a page at a time."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from aiohttp import web

from listener.api.deps import CALLER, DEPS, ApiFailure, base_url
from listener.api.models import Status
from listener.api.rows import ADDRESS, ListQuery, listed_requester, time_key

__all__ = ["list_generations"]

MAX_PAGE = 200


async def list_generations(request: web.Request) -> web.Response:
    """A page of records, newest first: the caller's own HTTP requests (its key id, or
    ``local`` when keys are off), or with ``?requester=0x...`` that address's on-chain
    requests (public on chain anyway). Filters: ``status`` (comma-separated), ``source``,
    ``since``/``until`` (ISO 8601, creation time); ``limit`` (1-200, 50); ``cursor`` from the
    previous page's ``nextCursor`` (`CURSOR`). The cursor holds the last record's place
    (creation time, id), so records that arrive meanwhile neither repeat nor hide a record in
    later pages."""
    deps = request.app[DEPS]
    q = request.query
    requester = q.get("requester")
    if requester is None:
        requester = request[CALLER]
    elif ADDRESS.match(requester):
        requester = listed_requester(requester)
    else:
        raise ApiFailure(422, "invalid_request", "requester: an address, 0x + 40 hex", "requester")
    statuses = tuple(x for x in q.get("status", "").split(",") if x)
    if unknown := [x for x in statuses if x not in Status.__members__.values()]:
        raise ApiFailure(422, "invalid_request", f"status: unknown {unknown[0]!r}", "status")
    source = q.get("source")
    if source not in (None, "chain", "http"):
        raise ApiFailure(422, "invalid_request", "source: chain or http", "source")
    query = ListQuery(
        requester=requester,
        source=source,
        statuses=statuses,
        since=_time(q, "since"),
        until=_time(q, "until"),
        after=_cursor(q.get("cursor")),
        limit=_limit(q.get("limit")),
    )
    page, more = await deps.store.page(query)
    base = base_url(request, deps)
    last = page[-1] if page else None
    cursor = f"{time_key(last.created_at)}_{last.id}" if more and last else None
    return web.json_response({"items": [g.public(base) for g in page], "nextCursor": cursor})


def _time(q: Mapping[str, str], name: str) -> datetime | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:  # RFC 3339 allows a lower-case t and z
        at = datetime.fromisoformat(raw.upper())
    except ValueError:
        raise ApiFailure(422, "invalid_request", f"{name}: an ISO 8601 time", name) from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    try:
        time_key(at)  # in UTC, within the years a datetime holds
    except OverflowError:  # a valid time whose UTC is before year 1 or after 9999
        return (datetime.min if at.year < 5000 else datetime.max).replace(tzinfo=UTC)
    return at


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiFailure(422, "invalid_request", f"limit: 1 to {MAX_PAGE}", "limit")
    return int(raw)


CURSOR = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)_(0x[0-9a-f]{64})")
"""A page's place: the creation time (`time_key`) and id of the last record before it. Any
value of this form is a place in the order, so a client may also start from a time."""


def _cursor(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    found = CURSOR.fullmatch(raw)
    if found is None:
        raise ApiFailure(422, "invalid_request", "cursor: not one this API gave", "cursor")
    return found[1], found[2]
