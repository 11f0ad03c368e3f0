"""Server-sent events: the parsing of a ``text/event-stream`` body into events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["SseEvent", "sse_events"]

MAX_LINE = 1 << 20
_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The lines of an event stream, ended by CRLF, LF or CR, wherever the chunks split."""
    pending, first = b"", True
    async for chunk in chunks:
        pending += chunk
        start = 0
        while (end := _EOL.search(pending, start)) is not None:
            if end.group() == b"\r" and end.end() == len(pending):
                break  # perhaps the first half of a CRLF
            line = pending[start : end.start()]
            if first:
                line, first = line.removeprefix(b"\xef\xbb\xbf"), False
            yield line.decode("utf-8", "replace")
            start = end.end()
        pending = pending[start:]
        if len(pending) > MAX_LINE:
            raise ValueError(f"an event stream line longer than {MAX_LINE} bytes")
    if pending.endswith(b"\r"):
        yield pending[:-1].decode("utf-8", "replace")
    # Anything else left is an unterminated line: the spec drops it.


async def sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[SseEvent]:
    """Parse ``text/event-stream`` (WHATWG HTML, "server-sent events"): comments (``:``) are
    skipped, ``data`` lines join with newlines, a blank line dispatches the event."""
    event, last_id = "", None
    data: list[str] = []
    async for line in _lines(chunks):
        if not line:
            if data:
                yield SseEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
