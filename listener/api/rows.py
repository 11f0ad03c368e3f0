"""A stored request and how topic records fold into it (pure logic, both stores use it)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from acesteps.messages import GenerationRequest, Message
from acesteps.types import ADDRESS_PATTERN
from listener.api.family import Deployment
from listener.api.models import Generation, Status
from listener.api.updates import apply

__all__ = [
    "Event",
    "Folded",
    "ListQuery",
    "Offsets",
    "Row",
    "Submission",
    "Transition",
    "fold",
    "list_sql",
    "listed_as",
    "listed_requester",
    "time_key",
]

Offsets = dict[tuple[str, int], int]
Event = tuple[str, Message]
"""(request id, message) as the projection decoded it."""


def time_key(at: datetime) -> str:
    """A timestamp as fixed-width UTC text, so that text order is time order (raises
    OverflowError for a time whose UTC is outside years 1-9999)."""
    u = at.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


def listed_as(g: Generation) -> tuple[str | None, str | None, str]:
    """The listing columns of a record: its requester (an address in lower case, a key id as
    it is), its source and `time_key` of its creation."""
    requester = None if g.requester is None else listed_requester(g.requester)
    return requester, g.source, time_key(g.created_at)


def listed_requester(requester: str) -> str:
    """A requester as the listing keeps it: an address in lower case, a key id as it is."""
    return requester.lower() if ADDRESS.match(requester) else requester


ADDRESS = re.compile(ADDRESS_PATTERN)


@dataclass(frozen=True)
class ListQuery:
    """One page of ``GET /api/generations``: a requester's records, newest first, after the
    cursor (``after``: the `time_key` and id of the last record of the page before); with
    ``requester`` None, the records of every requester (``/tracks``: the completed ones)."""

    requester: str | None
    source: str | None = None
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[str, str] | None = None
    limit: int = 50


def list_sql(q: ListQuery, mark: str) -> tuple[str, list[object]]:
    """The ``WHERE ... ORDER BY ... LIMIT`` of ``q`` with ``mark`` placeholders (``?`` or
    ``%s``), and its parameters. One row more than the page: whether there is a next one."""
    where: list[str] = []
    params: list[object] = []
    if q.requester is not None:
        where.append("requester = " + mark)
        params.append(q.requester)
    if q.source is not None:
        where.append("source = " + mark)
        params.append(q.source)
    if q.statuses:
        where.append(f"status IN ({', '.join([mark] * len(q.statuses))})")
        params.extend(q.statuses)
    if q.since is not None:
        where.append("created_key >= " + mark)
        params.append(time_key(q.since))
    if q.until is not None:
        where.append("created_key < " + mark)
        params.append(time_key(q.until))
    if q.after is not None:
        where.append(f"(created_key, id) < ({mark}, {mark})")
        params.extend(q.after)
    sql = f"WHERE {' AND '.join(where) or '1 = 1'} ORDER BY created_key DESC, id DESC LIMIT {mark}"
    return sql, [*params, q.limit + 1]


class Row:
    """A stored request: its record, the body fingerprint of an HTTP submission, and whether
    the projection has read its request record on Kafka."""

    def __init__(self, generation: Generation, fingerprint: str | None, request_seen: bool):
        self.generation = generation
        self.fingerprint = fingerprint
        self.request_seen = request_seen

    @classmethod
    def decode(cls, doc: str, fingerprint: str | None, request_seen: object) -> Row:
        """A row from its stored columns (``doc`` is the `Generation`'s JSON)."""
        return cls(Generation.model_validate_json(doc), fingerprint, bool(request_seen))


class Submission(NamedTuple):
    """An HTTP request to store on submit: its record and its request record's JSON (the
    outbox)."""

    generation: Generation
    outbox: str


@dataclass(frozen=True)
class Transition:
    """A request's status changed from ``before`` (None: it had no record) to
    ``after.status``; ``after`` is its record at that point."""

    request_id: str
    before: Status | None
    after: Generation


class Folded(NamedTuple):
    rows: dict[str, Row]
    """The rows the events changed, after them, in the order each was first changed."""
    transitions: list[Transition]
    """Every change of status, in the order of the events (webhooks announce them)."""


def fold(
    rows: Mapping[str, Row | None],
    events: Iterable[Event],
    deployment: Deployment | None = None,
) -> Folded:
    """What ``events`` do to ``rows`` (the stored ones, None or absent where a request has
    none yet): the changed rows and the status transitions on the way. A record whose status
    does not change makes no transition; a request whose row is made here goes from None.
    ``deployment``: the registry of this API's HTTP requests (`listener.api.updates.apply`)."""
    changed: dict[str, Row] = {}
    transitions: list[Transition] = []
    for request_id, message in events:
        before = changed.get(request_id) or rows.get(request_id)
        updated = apply(before.generation if before else None, message, deployment)
        if updated is None:
            continue
        was = before.generation.status if before else None
        if updated.status is not was:
            transitions.append(Transition(request_id, was, updated))
        seen = (before.request_seen if before else False) or _is_request(message)
        changed[request_id] = Row(updated, before.fingerprint if before else None, seen)
    return Folded(changed, transitions)


def _is_request(message: Message) -> bool:
    return isinstance(message, GenerationRequest)
