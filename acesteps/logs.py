"""How the services log: plain lines for a terminal, or one JSON object per line for a log
pipeline (``ACESTEPS_LOG_FORMAT=json``), each with the request id it is about.

The request id travels in a context variable: the consume loops set it while they handle a
record (its key), the API while it answers about a request, so every line logged meanwhile,
by our code or a library's, carries it (``request_id`` in JSON, ``[0x…]`` in plain lines).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

__all__ = ["JsonFormatter", "about", "configure", "current_request"]

_REQUEST: ContextVar[str | None] = ContextVar("acesteps_request_id", default=None)
PLAIN = "%(asctime)s %(levelname)s %(name)s:%(request_tag)s %(message)s"


def current_request() -> str | None:
    return _REQUEST.get()


@contextlib.contextmanager
def about(request_id: str | None) -> Iterator[None]:
    """Lines logged inside are about ``request_id`` (None: about no request in particular)."""
    token = _REQUEST.set(request_id)
    try:
        yield
    finally:
        _REQUEST.reset(token)


class _RequestTag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rid = _REQUEST.get()
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id"?, "service", "exc"?}`` per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(service: str, level: str, fmt: Literal["plain", "json"] = "plain") -> None:
    """The root logger of a service process: one stderr handler, the request id on each line."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestTag())
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
