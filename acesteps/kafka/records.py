"""Records in and out of the consume loop, dead-letter records, and the retry back-off.

Pure logic, no network: `acesteps.kafka.loop` uses it and the unit tests cover it.

Dead letters (written by the loop, in the transaction that commits the input's offset):

- the record's key is a request id (``0x`` + 64 lower-case hex): a
  `GenerationFailed` on ``PREFIX.failures.v1``, keyed by that request id, so the status
  projection and the API show the request as failed with the error code and message;
- otherwise: the record itself, key, value and headers unchanged, on
  ``PREFIX.deadletter.v1``. There is no request to mark failed, and a synthetic request id
  (say a hash of topic/partition/offset) would put a request nobody made on the failures
  topic, whose every record the API turns into a status. The raw copy keeps the bytes for an
  operator to inspect or replay.

Both carry ``dlq-*`` headers naming the source topic, partition and offset, the stage, the
error code and message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import ValidationError

from acesteps.errors import CODE_PATTERN, InvalidRecordError, PermanentError
from acesteps.kafka.schema_registry import encode_value
from acesteps.messages import (
    TYPE_HEADER,
    AudioChunk,
    GenerationFailed,
    Message,
    decode,
    headers_for,
)

__all__ = [
    "MAX_REQUEST_SIZE",
    "Headers",
    "InRecord",
    "OutRecord",
    "Stage",
    "dead_letter",
    "decode_value",
    "request_id_of",
]

MAX_REQUEST_SIZE: Final = 1024 * 1024
"""aiokafka's default ``max_request_size`` and Kafka's default ``max.message.bytes``: kept,
so the topics work on any managed Kafka."""

MAX_MESSAGE_CHARS: Final = 4_000  # GenerationFailed.message
MAX_HEADER_MESSAGE_BYTES: Final = 1_000

Stage = Literal["listener", "api", "generator", "publisher"]
Headers = tuple[tuple[str, bytes], ...]

_REQUEST_ID: Final = re.compile(rb"0x[0-9a-f]{64}")

M = TypeVar("M", bound=Message)


def request_id_of(key: bytes | None) -> str | None:
    """The request id a record key names, or None when the key is not one."""
    # fullmatch: with match and "$", a trailing newline would pass.
    if key is not None and _REQUEST_ID.fullmatch(key):
        return key.decode("ascii")
    return None


@dataclass(frozen=True)
class InRecord:
    """One consumed record, as a handler sees it (aiokafka's ConsumerRecord, typed)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int = 0

    @classmethod
    def of(cls, record: Any) -> InRecord:
        """From an aiokafka ``ConsumerRecord`` (untyped there)."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple((str(k), bytes(v or b"")) for k, v in record.headers or ()),
            timestamp_ms=record.timestamp,
        )

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (Kafka allows repeats), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    @property
    def request_id(self) -> str | None:
        return request_id_of(self.key)

    def where(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


@dataclass(frozen=True)
class OutRecord:
    """One record a handler asks the loop to produce in the input's transaction."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default=())

    @classmethod
    def message(cls, topic: str, key: str, message: Message) -> OutRecord:
        """A pydantic message, JSON-encoded (framed in schema registry mode), with its type
        header."""
        return cls(topic, key.encode(), encode_value(message), tuple(headers_for(message)))

    @classmethod
    def chunk(cls, topic: str, chunk: AudioChunk) -> OutRecord:
        """An audio chunk: raw bytes described by headers."""
        return cls(topic, chunk.request_id.encode(), chunk.data, tuple(chunk.headers()))

    def size_estimate(self) -> int:
        """Upper bound of the bytes this record takes in a produce request."""
        return int(
            DefaultRecordBatchBuilder.estimate_size_in_bytes(
                self.key, self.value, list(self.headers)
            )
        )


def decode_value(model: type[M], record: InRecord) -> M:
    """The record's value as ``model``; `InvalidRecordError` (permanent) when it is not one.

    A record whose type header names another model is refused before its JSON is parsed.
    """
    kind = record.header(TYPE_HEADER)
    if kind is not None and kind != model.__name__.encode():
        shown = kind[:64].decode("utf-8", "replace")
        raise InvalidRecordError(f"record type {shown!r}, expected {model.__name__}")
    try:
        return decode(model, record.value)
    except ValidationError as exc:
        raise InvalidRecordError(f"{model.__name__}: {describe_validation(exc)}") from exc
    except ValueError as exc:
        raise InvalidRecordError(str(exc)) from exc


def describe_validation(exc: ValidationError, limit: int = 5) -> str:
    """A one-line summary of a pydantic error: ``field: message; ...``."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... {more} more")
    return "; ".join(parts)


def dead_letter(
    record: InRecord,
    *,
    stage: Stage,
    code: str,
    message: str,
    failures_topic: str,
    deadletter_topic: str,
) -> OutRecord:
    """The record that replaces ``record``'s output when it fails for good (module docstring)."""
    if not CODE_PATTERN.fullmatch(code):
        message = f"[{code[:64]}] {message}"
        code = PermanentError.code
    # Lone surrogates (bytes decoded with surrogateescape) cannot be written as JSON.
    message = message.encode("utf-8", "replace").decode("utf-8")
    trace: Headers = (
        ("dlq-topic", record.topic.encode()),
        ("dlq-partition", str(record.partition).encode()),
        ("dlq-offset", str(record.offset).encode()),
        ("dlq-stage", stage.encode()),
        ("dlq-code", code.encode()),
        ("dlq-message", _clip_bytes(message.encode())),
    )
    request_id = record.request_id
    if request_id is None:
        return _fitting(
            OutRecord(deadletter_topic, record.key, record.value, record.headers + trace)
        )
    failed = GenerationFailed(
        request_id=request_id,
        stage=stage,
        code=code,
        message=_clip_chars(f"{message} ({record.where()})"),
    )
    return OutRecord(
        failures_topic, record.key, encode_value(failed), tuple(headers_for(failed)) + trace
    )


def _fitting(raw: OutRecord) -> OutRecord:
    """``raw``, or as much of it as fits one produce request.

    The input record fitted the broker's limit, but its copy carries the ``dlq-*`` headers
    too; a copy that no longer fits would fail its transaction on every retry. The source
    topic, partition and offset stay in the headers, so the dropped bytes can be found there
    until the source topic's retention deletes them.
    """
    if raw.size_estimate() <= MAX_REQUEST_SIZE:
        return raw
    dropped = (("dlq-dropped", f"value ({len(raw.value or b'')} bytes)".encode()),)
    smaller = OutRecord(raw.topic, raw.key, None, raw.headers + dropped)
    if smaller.size_estimate() <= MAX_REQUEST_SIZE:
        return smaller
    trace = tuple(h for h in raw.headers if h[0].startswith("dlq-"))[-6:]
    return OutRecord(raw.topic, None, None, (*trace, ("dlq-dropped", b"value, key, headers")))


def _clip_chars(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip_bytes(data: bytes, limit: int = MAX_HEADER_MESSAGE_BYTES) -> bytes:
    return data if len(data) <= limit else data[: limit - 3] + b"..."
