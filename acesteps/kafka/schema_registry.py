"""Schema registry mode: record values in the Confluent wire format (docs/topics.md).

Off by default: a value is the record's JSON. With ``ACESTEPS_SCHEMA_REGISTRY_URL`` set to the
base of a Confluent-compatible API (Confluent Schema Registry, Apicurio Registry's
``/apis/ccompat/v7``, Karapace, Redpanda), every service registers the JSON Schema of each
record type (`acesteps.schemas`) once at start-up (`configure`, from `acesteps.service.main`),
under the subject of the record's name (RecordNameStrategy: ``acesteps.GenerationRequest``),
and then writes each value as the magic byte 0, the schema id (4 bytes, big-endian) and the
JSON (`encode_value`, used by `acesteps.kafka.records.OutRecord`).

Consumers need no registry: `acesteps.messages.decode` takes both forms (a JSON text never
starts with a zero byte), so the mode can be turned on and off producer by producer. The
``acesteps-type`` header is written in both modes; audio chunks stay raw bytes.

Registering is idempotent (the same schema text gets the same id), so every instance of every
service does it; a changed schema becomes the subject's next version. The subjects'
compatibility setting is the registry's (left as it is): what may change within ``.v1`` is
checked before a release, by ``acesteps schemas check`` (`acesteps.schemas.breaking_changes`).
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from acesteps.messages import MESSAGE_TYPES, Message, encode
from acesteps.schemas import render

__all__ = [
    "MAGIC",
    "SUBJECT_NAMESPACE",
    "RegistryError",
    "SchemaRegistry",
    "configure",
    "encode_value",
    "frame",
    "registered",
    "subject",
]

MAGIC: Final = 0
HEADER: Final = struct.Struct(">bI")  # magic byte, schema id
SUBJECT_NAMESPACE: Final = "acesteps"
CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"

_ids: dict[str, int] = {}


class RegistryError(Exception):
    """The registry refused a request or could not be reached."""


def subject(record: str) -> str:
    """The subject of a record type (RecordNameStrategy): ``acesteps.GenerationRequest``."""
    return f"{SUBJECT_NAMESPACE}.{record}"


def frame(schema_id: int, payload: bytes) -> bytes:
    """``payload`` in the Confluent wire format: magic byte 0, schema id, payload."""
    return HEADER.pack(MAGIC, schema_id) + payload


class SchemaRegistry:
    """A small blocking client of the Confluent Schema Registry API (start-up and tests).

    ``url`` may carry ``user:password@`` (Confluent Cloud's API key and secret,
    percent-encoded), sent as HTTP basic authentication.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        self._auth: str | None = None
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
            self._auth = base64.b64encode(f"{user}:{password}".encode()).decode()
            netloc = parts.hostname or ""
            if parts.port is not None:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self.url = urlunsplit(parts).rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Accept", CONTENT_TYPE)
        if data is not None:
            request.add_header("Content-Type", CONTENT_TYPE)
        if self._auth is not None:
            request.add_header("Authorization", f"Basic {self._auth}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise RegistryError(f"{method} {self.url}{path}: HTTP {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:  # refused, timed out, not JSON
            raise RegistryError(f"{method} {self.url}{path}: {exc}") from exc

    def register(self, subject_name: str, schema: str) -> int:
        """The id of JSON Schema ``schema`` under ``subject_name``, registering it if new."""
        answer = self._call(
            "POST",
            f"/subjects/{quote(subject_name, safe='')}/versions",
            {"schemaType": "JSON", "schema": schema},
        )
        return int(answer["id"])

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The registered schema of an id (as a consumer in another language looks it up)."""
        answer: dict[str, Any] = self._call("GET", f"/schemas/ids/{schema_id}")
        return answer

    def subjects(self) -> list[str]:
        answer: list[str] = self._call("GET", "/subjects")
        return answer

    def register_records(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """Register the exported schema of each record type; record name -> schema id."""
        texts = render()
        return {
            name: self.register(subject(name), texts[f"{name}.json"])
            for name in (MESSAGE_TYPES if names is None else names)
        }


def configure(url: str | None, *, timeout_s: float = 10.0) -> dict[str, int]:
    """Turn the mode on for this process (registering every record type), or off (None).

    Blocking: called once at start-up, before the event loop runs. Raises `RegistryError`
    when the registry cannot be reached or refuses a schema; the service then does not start.
    """
    _ids.clear()
    if url:
        _ids.update(SchemaRegistry(url, timeout_s=timeout_s).register_records())
    return dict(_ids)


def registered() -> dict[str, int]:
    """Record name -> schema id, when the mode is on; empty when it is off."""
    return dict(_ids)


def encode_value(message: Message) -> bytes:
    """The value of a record: its JSON, framed with its schema id when the mode is on."""
    payload = encode(message)
    schema_id = _ids.get(type(message).__name__)
    return payload if schema_id is None else frame(schema_id, payload)
