"""Cancel and deadlines: ``POST /api/generations/{id}/cancel``, ``deadline`` and
``Cancel-After`` on submit.

A cancel is a `CancelRequested` on ``PREFIX.cancels.v1``; the worker that holds the request
stops it (`acesteps.cancels`: the generator before its model work or between two denoising
steps, the publisher before it pins or registers) and writes a `GenerationCanceled`, which
makes the record ``canceled``. So the answer is 202: the cancel is accepted, and the record
says what came of it. A request registered before its publisher read the cancel stays
``completed`` (it is on chain).

Only the API key that submitted a request can cancel it; the chain's requests are canceled on
chain (``cancelRequest``, ``reclaim``), which the listener turns into the same record. A
request with variations is canceled with its variations that have not ended (`cancel`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from acesteps.messages import CancelRequested
from listener.api.deps import CALLER, DEPS, ApiFailure, answer, lookup
from listener.api.models import GenerateBody

__all__ = ["DURATION_PATTERN", "MAX_DEADLINE", "cancel", "deadline_of", "parse_duration"]

MAX_DEADLINE = timedelta(days=7)
"""As long as the requests and cancels topics keep their records."""

_NUMBER = r"\d{1,9}(?:\.\d{1,6})?"
DURATION_PATTERN = rf"^\s*(?:{_NUMBER}|(?:{_NUMBER}(?:ms|h|m|s))+)\s*$"
"""A ``Cancel-After`` value: seconds (``90``), or Go-style parts (``90s``, ``5m``, ``1h30m``)."""
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds of a ``Cancel-After`` value (`DURATION_PATTERN`: ``90``, ``90s``, ``5m``,
    ``1h30m``, ``1.5s``, ``500ms``); ValueError when it is not one."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(text)
    text = text.strip()
    if re.fullmatch(_NUMBER, text):
        return float(text)
    return sum(float(n) * _UNIT_S[u] for n, u in _PART.findall(text))


def deadline_of(request: web.Request, body: GenerateBody, now: datetime) -> datetime | None:
    """The request's deadline: the earlier of ``deadline`` and now + ``Cancel-After``."""
    found = []
    if body.deadline is not None:
        if body.deadline.tzinfo is None:
            raise ApiFailure(
                422, "invalid_request", "deadline: give a time zone (e.g. Z)", "deadline"
            )
        try:
            found.append(body.deadline.astimezone(UTC))
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00: past the last year there is
            raise _beyond("deadline") from None
    header = request.headers.get("Cancel-After")
    if header is not None:
        try:
            seconds = parse_duration(header)
        except ValueError:
            raise ApiFailure(
                422,
                "invalid_request",
                "Cancel-After: a duration such as 90, 90s, 5m or 1h30m",
                "Cancel-After",
            ) from None
        if seconds > MAX_DEADLINE.total_seconds():  # also before now + it overflows
            raise _beyond("Cancel-After")
        found.append(now + timedelta(seconds=seconds))
    if not found:
        return None
    deadline = min(found)
    if not now < deadline <= now + MAX_DEADLINE:
        raise _beyond("deadline" if body.deadline is not None else "Cancel-After")
    return deadline


def _beyond(field: str) -> ApiFailure:
    return ApiFailure(
        422,
        "invalid_request",
        f"the deadline must be in the future and within {MAX_DEADLINE.days} days",
        field,
    )


async def cancel(request: web.Request) -> web.Response:
    """Ask for the request to stop; 202 with the record, 409 once it has ended.

    A request with variations was one submission for all its tracks: canceling it cancels
    each of its variations that has not ended too (its ``children``), and is refused only
    once all have ended. A variation's own cancel stops that variation alone."""
    deps = request.app[DEPS]
    g = await lookup(request)
    if g.source != "http" or g.requester != request[CALLER]:
        # Nobody learns from this answer whether another key's request exists.
        raise ApiFailure(404, "not_found", f"no request {g.id} of yours")
    family = [g]
    for child_id in g.children or ():
        child = await deps.store.get(child_id)
        if child is not None and child.source == "http" and child.requester == g.requester:
            family.append(child)
    running = [member for member in family if not member.status.final]
    if not running:
        raise ApiFailure(
            409,
            "not_cancelable",
            f"request {g.id} is {g.status.value}"
            + (" and so are its variations" if len(family) > 1 else "")
            + ": only a request that has not ended can be canceled",
        )
    try:
        for member in running:
            await deps.submitter.cancel(
                CancelRequested(request_id=member.id, reason="requested", by=member.requester)
            )
    except Exception as exc:
        raise ApiFailure(
            503, "unavailable", f"the cancel could not be queued: {type(exc).__name__}"
        ) from exc
    return answer(request, g, 202)
