"""``GET /api/generations/{id}/verify`` as JSON: the `acesteps.verify.Verdict`, camelCase.

The answer carries every field of the verdict (and its derived ``exitCode``, ``hashMatches``,
``cidMatches``) under the API's camelCase names. Until the next major version it also keeps
the snake_case names of the first versions (``onchain_audio_hash``, ...), marked deprecated in
the OpenAPI document, so that existing clients go on working while they move.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

from pydantic import TypeAdapter

from acesteps.options import api_name
from acesteps.verify import Verdict

__all__ = ["verdict_body", "verdict_schema"]

_DERIVED: dict[str, Any] = {
    "exit_code": {
        "type": "integer",
        "enum": [0, 1, 2, 3],
        "description": "acesteps verify's: 0 MATCH, 1 MISMATCH, 2 UNKNOWN, 3 NOT_REGISTERED",
    },
    "hash_matches": {"type": ["boolean", "null"]},
    "cid_matches": {"type": ["boolean", "null"]},
}


def verdict_body(verdict: Verdict) -> dict[str, Any]:
    plain = verdict.as_dict()
    camel = {api_name(name): value for name, value in plain.items()}
    legacy = {name: value for name, value in plain.items() if name not in camel}
    return {**camel, **legacy}


@cache
def verdict_schema() -> dict[str, Any]:
    """The answer's JSON Schema, from the `Verdict` dataclass itself."""
    rendered = TypeAdapter(Verdict).json_schema(mode="serialization")
    defs = rendered.get("$defs", {})
    fields = {**rendered["properties"], **_DERIVED}
    properties: dict[str, Any] = {}
    for name, schema in fields.items():
        if "$ref" in schema:  # the status enum: inline, the document has no $defs
            schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
        schema = {k: v for k, v in schema.items() if k not in ("title", "default")}
        properties[api_name(name)] = schema
        if api_name(name) != name:
            properties[name] = {
                **schema,
                "deprecated": True,
                "description": f"old name of {api_name(name)}, until the next major version",
            }
    names = [f.name for f in dataclasses.fields(Verdict)] + list(_DERIVED)
    return {
        "type": "object",
        "required": [api_name(n) for n in names],
        "properties": properties,
    }
