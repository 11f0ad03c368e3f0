"""Failure reasons cut to what ``markFailed`` keeps: at most 256 bytes of UTF-8.

The contract cuts a longer reason at 256 bytes itself, backing off to the start of a UTF-8
character, but anywhere in a word. `fit_reason` cuts before sending: at the last word boundary
that fits, never inside a character, and ends a cut reason with "…" so a reader sees it was
cut. Text without a usable boundary (a long token, a hex dump) is cut at a character boundary.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ELLIPSIS", "MAX_REASON_BYTES", "fit_reason"]

MAX_REASON_BYTES: Final = 256
"""``AceStepsRegistry.MAX_REASON_BYTES``."""
ELLIPSIS: Final = "…"
_MIN_KEPT: Final = 0.5
"""A word boundary is used only when it keeps at least this share of the room."""


def fit_reason(reason: str, max_bytes: int = MAX_REASON_BYTES) -> str:
    """``reason`` as at most ``max_bytes`` bytes of UTF-8: whole when it fits, else cut at a
    word boundary (or, without one in the second half of the room, at a character boundary)
    and ended with "…". Characters UTF-8 cannot encode (lone surrogates) become "?"."""
    data = reason.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    room = max_bytes - len(ELLIPSIS.encode())
    if room <= 0:
        raise ValueError(f"max_bytes must leave room for {ELLIPSIS!r}")
    # The longest prefix that fits and ends on a character boundary: a cut character's
    # remaining bytes are dropped.
    head = data[:room].decode("utf-8", "ignore")
    if not data[len(head.encode()) :][:1].isspace():  # the cut falls inside a word
        boundary = max(head.rfind(c) for c in (" ", "\n", "\t"))
        if boundary >= len(head) * _MIN_KEPT:
            head = head[:boundary]
    return head.rstrip() + ELLIPSIS
