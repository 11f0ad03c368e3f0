"""A stored request and how topic records fold into it (pure logic, both stores use it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from acesteps.messages import GenerationRequest, Message
from listener.api.models import Generation
from listener.api.updates import apply

__all__ = ["Event", "Offsets", "Row", "fold"]

Offsets = dict[tuple[str, int], int]
Event = tuple[str, Message]
"""(request id, message) as the projection decoded it."""


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


def fold(rows: Mapping[str, Row | None], events: Iterable[Event]) -> dict[str, Row]:
    """The rows that ``events`` change, after them, from ``rows`` (the stored ones, None or
    absent where a request has none yet), in the order each was first changed."""
    changed: dict[str, Row] = {}
    for request_id, message in events:
        before = changed.get(request_id) or rows.get(request_id)
        updated = apply(before.generation if before else None, message)
        if updated is None:
            continue
        seen = (before.request_seen if before else False) or _is_request(message)
        changed[request_id] = Row(updated, before.fingerprint if before else None, seen)
    return changed


def _is_request(message: Message) -> bool:
    return isinstance(message, GenerationRequest)
