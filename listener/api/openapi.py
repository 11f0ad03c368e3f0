"""The OpenAPI 3.1 document of the API, built from the same pydantic models it validates with.

Served at ``/api/openapi.json``; the contract tests run schemathesis against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel

from acesteps.presets import PresetCatalog
from acesteps.types import ADDRESS_PATTERN, REQUEST_ID_INPUT
from listener.api.cancel import DURATION_PATTERN as _DURATION
from listener.api.contract import openapi_path as _contract
from listener.api.deps import openapi_error as _error
from listener.api.listing import CURSOR
from listener.api.models import ErrorBody, GenerateBody, Generation, Status
from listener.api.pages import openapi_path as _verify_config
from listener.api.presets import PresetList
from listener.api.presets import openapi_path as _presets
from listener.api.served import ServedModelList
from listener.api.served import openapi_path as _served
from listener.api.uploads import UploadedAudio
from listener.api.uploads import openapi_path as _uploads
from listener.api.verdicts import verdict_schema
from listener.api.webhooks.models import WebhookDeliveries, WebhookPayload, WebhookSecret

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_JSON = "application/json"


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    models: tuple[tuple[type[BaseModel], str], ...] = (
        (GenerateBody, "validation"),
        (Generation, "serialization"),
        (ErrorBody, "serialization"),
        (WebhookDeliveries, "serialization"),
        (WebhookSecret, "serialization"),
        (WebhookPayload, "serialization"),
        (ServedModelList, "serialization"),
        (PresetList, "serialization"),
        (UploadedAudio, "serialization"),
    )
    for model, mode in models:
        schema = model.model_json_schema(by_alias=True, ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _generation(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}}},
        "content": {_JSON: {"schema": {"$ref": _REF.format(model="Generation")}}},
    }


def _generation_later(description: str) -> dict[str, Any]:
    """A 202 with the record: follow ``Location``, poll again after ``Retry-After``."""
    answer = _generation(description)
    answer["headers"] = {
        "Location": {"schema": {"type": "string"}},
        "Retry-After": {
            "description": "seconds before polling again",
            "schema": {"type": "string"},
        },
    }
    return answer


_KEYED: list[dict[str, list[str]]] = [{"apiKey": []}, {"apiKeyHeader": []}, {}]
"""``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; neither where keys are off."""

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_AUDIO = {"audio/mpeg": _BINARY, "audio/wav": _BINARY, "audio/flac": _BINARY}
_NO_TRACK = _error("the request ended without a track (failed, canceled or revoked)")


_AUDIO_HEADERS = [
    {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
    for name in ("Range", "If-None-Match", "If-Match", "If-Modified-Since")
]


def _audio_answers(content: dict[str, Any] | None) -> dict[str, Any]:
    """The answers of /audio, with the file (GET) or without (HEAD)."""
    body = {"content": content} if content else {}
    return {
        "200": {
            "description": "the file",
            "headers": {
                "ETag": {"description": "the audioHash, quoted", "schema": {"type": "string"}},
                "Content-Length": {"schema": {"type": "string"}},
            },
            **body,
        },
        "206": {
            "description": "the requested range",
            "headers": {"Content-Range": {"schema": {"type": "string"}}},
            **body,
        },
        "304": {"description": "If-None-Match holds the ETag (the audioHash)"},
        "409": _error("not completed yet"),
        "410": _NO_TRACK,
        "412": {"description": "If-Match does not hold the ETag"},
        "416": {"description": "range not satisfiable"},
        "502": _error("IPFS served bytes that do not match the registered hash"),
        "503": _error("IPFS unavailable; retry", **{"Retry-After": "seconds to wait"}),
        **_READ_ERRORS,
    }


def _json(description: str, model: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": _REF.format(model=model)}}},
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


_WEBHOOKS = {
    "generation": {
        "post": {
            "operationId": "generationWebhook",
            "summary": "Sent to a request's webhook URL when its status enters a subscribed one "
            "(Standard Webhooks; retried until a 2xx answer or the schedule's end)",
            "parameters": [
                _header("webhook-id", "the delivery's id: the same on every retry"),
                _header("webhook-timestamp", "unix seconds of this attempt"),
                _header("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body>"),
            ],
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"$ref": _REF.format(model="WebhookPayload")}}},
            },
            "responses": {"2XX": {"description": "received; any other answer is retried"}},
        }
    }
}

_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the requestId",
    "schema": {"type": "string", "pattern": REQUEST_ID_INPUT},
}
_STATUS = f"({'|'.join(s.value for s in Status)})"
_PAGE = {
    "type": "object",
    "required": ["items", "nextCursor"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": _REF.format(model="Generation")}},
        "nextCursor": {"type": ["string", "null"]},
    },
}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_READ_ERRORS = {
    "400": _error("malformed id"),
    "404": _error("no such request"),
    "429": _error("rate limited", **{"Retry-After": "seconds to wait"}),
}


@cache
def _paths() -> dict[str, Any]:
    return {
        "/api/generate": {
            "post": {
                "operationId": "generate",
                "summary": "Request a track; waits for it up to the server's limit",
                "security": _KEYED,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "a retry with the same key returns the same request",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    },
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "description": "seconds to wait for completion (0: answer at once)",
                        "schema": {"type": "number", "minimum": 0},
                    },
                    {
                        "name": "Prefer",
                        "in": "header",
                        "required": False,
                        "description": "respond-async: answer 202 at once, without waiting",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "Cancel-After",
                        "in": "header",
                        "required": False,
                        "description": "cancel the request if it is not published within this "
                        "duration (90, 90s, 5m, 1h30m; at most 7 days); with deadline, the "
                        "earlier wins",
                        "schema": {"type": "string", "pattern": _DURATION},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"$ref": _REF.format(model="GenerateBody")}}},
                },
                "responses": {
                    "200": _generation("finished: completed, failed, canceled or revoked"),
                    "202": _generation_later("not finished yet; follow Location"),
                    "400": _error("not JSON"),
                    "401": _error("missing or unknown API key"),
                    "413": _error("the body is over 64 KiB"),
                    "422": _error(
                        "invalid field (named in error.field), or an edit's source that "
                        "cannot be edited (sourceTrack, sourceUpload, the window, the length)"
                    ),
                    "429": _error("rate limited", **{"Retry-After": "seconds to wait"}),
                    "503": _error(
                        "Kafka unavailable, or an edit's source cannot be checked (chain, "
                        "IPFS); retry",
                        **{"Retry-After": "seconds to wait (an edit's source)"},
                    ),
                },
            }
        },
        "/api/uploads": _uploads(_KEYED),
        "/api/generations": {
            "get": {
                "operationId": "listGenerations",
                "summary": "The caller's records (or an address's on-chain ones), newest first",
                "parameters": [
                    _query(
                        "status",
                        "comma-separated statuses",
                        {"type": "string", "pattern": f"^({_STATUS}(,{_STATUS})*)?$"},
                    ),
                    _query("source", "chain or http", {"enum": ["chain", "http"]}),
                    _query(
                        "since", "created at or after", {"type": "string", "format": "date-time"}
                    ),
                    _query("until", "created before", {"type": "string", "format": "date-time"}),
                    _query(
                        "cursor",
                        "nextCursor of the page before",
                        {"type": "string", "pattern": f"^({CURSOR.pattern})?$"},
                    ),
                    _query(
                        "limit",
                        "records per page (50)",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                    ),
                    _query(
                        "requester",
                        "list this address's on-chain requests instead of the caller's own",
                        {"type": "string", "pattern": ADDRESS_PATTERN},
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "a page; nextCursor is null on the last one",
                        "content": {_JSON: {"schema": _PAGE}},
                    },
                    "422": _error("invalid parameter (named in error.field)"),
                    "429": _error("rate limited", **{"Retry-After": "seconds to wait"}),
                },
            }
        },
        "/api/generations/{id}": {
            "get": {
                "operationId": "getGeneration",
                "summary": "The status and, once completed, the track of a request",
                "parameters": [_ID_PARAM],
                "responses": {"200": _generation("the request"), **_READ_ERRORS},
            }
        },
        "/api/generations/{id}/cancel": {
            "post": {
                "operationId": "cancelGeneration",
                "summary": "Stop a request this API key submitted; the record turns canceled "
                "once its worker stops it (or completed, when it was registered first)",
                "security": _KEYED,
                "parameters": [_ID_PARAM],
                "responses": {
                    "202": _generation_later("the cancel is accepted; the record as it was"),
                    "400": _error("malformed id"),
                    "401": _error("missing or unknown API key"),
                    "404": _error("no such request of this API key"),
                    "409": _error("the request has ended"),
                    "429": _error("rate limited", **{"Retry-After": "seconds to wait"}),
                    "503": _error("Kafka unavailable; retry"),
                },
            }
        },
        "/api/generations/{id}/audio": {
            "get": {
                "operationId": "getAudio",
                "summary": "The published file (range and conditional requests supported)",
                "parameters": [_ID_PARAM, *_AUDIO_HEADERS],
                "responses": _audio_answers(_AUDIO),
            },
            "head": {
                "operationId": "headAudio",
                "summary": "The published file's headers (size, ETag = audioHash), no body",
                "parameters": [_ID_PARAM, *_AUDIO_HEADERS],
                "responses": _audio_answers(None),
            },
        },
        "/api/generations/{id}/events": {
            "get": {
                "operationId": "getEvents",
                "summary": "Server-sent events: a `status` event (data: Generation) per change",
                "parameters": [
                    _ID_PARAM,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "the id of the last status event seen (a reconnect)",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "events until the record is settled: failed, "
                        "canceled, revoked, or completed with a final registration",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "204": {"description": "Last-Event-ID is the settled end: nothing more"},
                    **_READ_ERRORS,
                },
            }
        },
        "/api/generations/{id}/verify": {
            "get": {
                "operationId": "verify",
                "summary": "Check the published file against its on-chain registration",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "the verdict (status MATCH, MISMATCH or UNKNOWN)",
                        "content": {_JSON: {"schema": verdict_schema()}},
                    },
                    "409": _error("not completed yet"),
                    "410": _NO_TRACK,
                    **_READ_ERRORS,
                },
            }
        },
        "/api/generations/{id}/manifest": {
            "get": {
                "operationId": "getManifest",
                "summary": "The generation manifest: how the track was made (RFC 8785 JSON)",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "the manifest's canonical bytes, as registered on chain",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    },
                    "404": _error("no such request, or no manifest registered"),
                    "409": _error("not completed yet"),
                    "410": _NO_TRACK,
                    "502": _error("IPFS served a manifest that is not the registered one"),
                    "503": _error("IPFS unavailable; retry", **{"Retry-After": "seconds to wait"}),
                    **_READ_ERRORS,
                },
            }
        },
        "/api/generations/{id}/webhooks": {
            "get": {
                "operationId": "listWebhookDeliveries",
                "summary": "The request's webhook deliveries: status, attempts, next attempt, "
                "last answer and error (only for the key that submitted it)",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _json("every delivery, in the order they are sent", "WebhookDeliveries"),
                    "400": _error("malformed id"),
                    "404": _error("no such request of this caller"),
                    "429": _error("rate limited", **{"Retry-After": "seconds to wait"}),
                },
            }
        },
        "/api/webhooks/secret": {
            "get": {
                "operationId": "getWebhookSecret",
                "summary": "The secret that verifies this API key's webhooks (Standard Webhooks)",
                "security": _KEYED,
                "responses": {
                    "200": _json("whsec_ + base64 of the key", "WebhookSecret"),
                    "401": _error("keys are on and no valid key was sent"),
                    "429": _error("rate limited", **{"Retry-After": "seconds to wait"}),
                },
            }
        },
        "/api/contract": _contract(),
        "/api/models": _served(),
        "/api/presets": _presets(),
        "/api/verify-config": _verify_config(),
        "/healthz": {
            "get": {
                "operationId": "health",
                "responses": {
                    "200": {"description": "serving"},
                    "503": {"description": "the status projection is not running"},
                },
            }
        },
    }


def _served_names(schemas: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """The schemas with the request's ``model`` limited to the served names (the web page
    offers them as a choice); without names, as built."""
    if not models:
        return schemas
    branch = schemas["GenerateBody"]["properties"]["model"]["anyOf"][0]
    branch["enum"] = list(models)
    return schemas


def _offered_presets(schemas: dict[str, Any], presets: PresetCatalog | None) -> dict[str, Any]:
    """The schemas with the request's ``preset`` limited to the offered names, each with its
    description (``x-enumDescriptions``: the web page's choice shows them); where none is
    offered, to null: no name is valid there, and the document says so (its property-based
    tests then never send one as valid)."""
    body = schemas["GenerateBody"]["properties"]
    if presets is None or not presets.names:
        described = body["preset"].get("description", "")
        body["preset"] = {
            "type": "null",
            "default": None,
            "title": body["preset"].get("title", "Preset"),
            "description": f"{described}; this deployment offers none",
        }
        return schemas
    branch = body["preset"]["anyOf"][0]
    branch["enum"] = list(presets.names)
    descriptions = {name: spec.description for name, spec in presets.presets.items()}
    if any(descriptions.values()):
        branch["x-enumDescriptions"] = descriptions
    return schemas


def openapi_document(
    server_url: str, models: Sequence[str] = (), presets: PresetCatalog | None = None
) -> dict[str, Any]:
    """The document; ``models``: the served names (`acesteps.models`), which a request's
    ``model`` may take; ``presets``: the offered style presets (`acesteps.presets`), whose
    names a request's ``preset`` may take (none: it takes only null)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AceSteps",
            "version": "1",
            "description": "Verifiable AI music: request a track, follow it, fetch and verify it.",
        },
        "servers": [{"url": server_url}],
        "paths": _paths(),
        "webhooks": _WEBHOOKS,
        "components": {
            "schemas": _offered_presets(_served_names(_schemas(), models), presets),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
