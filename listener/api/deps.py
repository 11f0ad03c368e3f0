"""What the API's handlers share: their dependencies (`ApiDeps`) and the JSON error answer.

`listener.api.routes` reads them from the application (``app[DEPS]``, ``request[CALLER]``);
`listener.api.app` builds the application around them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from acesteps.artifact import ContractArtifact
from acesteps.ipfs.kubo import AddResult
from acesteps.messages import CancelRequested, GenerationRequest
from acesteps.models import Catalog
from acesteps.presets import PresetCatalog
from acesteps.types import parse_request_id
from acesteps.verify import Verdict
from listener.api.audiocache import AudioCache
from listener.api.auth import ApiKeys, RateLimiter
from listener.api.models import ApiError, ErrorBody, Generation
from listener.api.pageconfig import PageConfig
from listener.api.projection import Hub, Projection
from listener.api.store import Store
from listener.api.webhooks.config import WebhookConfig

__all__ = [
    "CALLER",
    "DEPS",
    "STATIC",
    "ApiDeps",
    "ApiFailure",
    "Ipfs",
    "Manifests",
    "Submitter",
    "Verifier",
    "answer",
    "base_url",
    "error_response",
    "lookup",
    "openapi_error",
]

DEPS: web.AppKey[ApiDeps] = web.AppKey("deps")
CALLER = web.RequestKey("caller", str)
"""Who is calling: the API key id, or ``local`` when keys are off."""
STATIC = Path(str(files("listener.api") / "static"))
"""The web page's files: package data, on disk wherever the package is installed."""


class Submitter(Protocol):
    async def submit(self, request: GenerationRequest) -> None:
        """Write the request to ``PREFIX.requests.v1`` (raises when Kafka refuses)."""
        ...

    async def cancel(self, cancel: CancelRequested) -> None:
        """Write the cancel to ``PREFIX.cancels.v1`` (raises when Kafka refuses)."""
        ...


class Verifier(Protocol):
    async def __call__(self, request_id: str) -> Verdict: ...


class Ipfs(Protocol):
    """The API's Kubo client (`acesteps.ipfs.kubo.KuboClient`), as uploads use it."""

    async def add(self, data: bytes, *, pin: bool = True) -> AddResult: ...

    async def pin_ls(self, cid: str) -> bool: ...

    def cat_iter(self, cid: str) -> AsyncIterator[bytes]: ...


class Manifests(Protocol):
    async def __call__(self, request_id: str) -> bytes:
        """The registered generation manifest's bytes, checked against the chain; raises
        `acesteps.provenance.ManifestProblem`."""
        ...


@dataclass
class ApiDeps:
    store: Store
    hub: Hub
    projection: Projection | None
    submitter: Submitter
    audio: AudioCache
    verifier: Verifier
    manifests: Manifests
    keys: ApiKeys
    generate_limit: RateLimiter
    read_limit: RateLimiter
    wait_s: float
    chain_id: int
    contract: str
    """Where HTTP requests are registered: their ids are the contract's offchainRequestId."""
    public_url: str | None = None
    resend_after_s: float = 10.0
    cors_origins: tuple[str, ...] = ()
    webhooks: WebhookConfig | None = None
    """Signing and target rules of webhooks (`listener.api.webhooks`); None: refused."""
    models: Catalog = field(default_factory=Catalog.single)
    """The served models (``ACESTEPS_MODELS``, as the generators read it): requests naming
    another are refused, ``GET /api/models`` lists them (`listener.api.served`)."""
    presets: PresetCatalog = field(default_factory=lambda: PresetCatalog({}))
    """The offered style presets (``ACESTEPS_PRESETS``, as the generators read it): requests
    naming another, or one not for their model, are refused, ``GET /api/presets`` lists them
    (`listener.api.presets`)."""
    error_limit: RateLimiter = field(default_factory=lambda: RateLimiter(300, 100))
    """What submissions refused as invalid spend instead of ``generate_limit``."""
    contract_artifact: Callable[[], Awaitable[ContractArtifact]] | None = None
    """Reads ``GET /api/contract``'s document (`listener.api.contract`); None: no chain reads."""
    pages: PageConfig = field(default_factory=PageConfig)
    """What the verification and track pages are told (`listener.api.pages`)."""
    ipfs: Ipfs | None = None
    """The Kubo client that pins uploads and reads them back as edit sources (the audio
    cache's); None: uploads and upload sources answer 503."""
    upload_max_bytes: int = 50 * 2**20
    """The largest file ``POST /api/uploads`` accepts (``ACESTEPS_API_UPLOAD_MAX_MB``)."""


def base_url(request: web.Request, deps: ApiDeps) -> str:
    """The base of the URLs answers hand out: the configured public URL, else the request's."""
    return deps.public_url or f"{request.scheme}://{request.host}"


class ApiFailure(web.HTTPException):
    """An answer with a JSON error body (raise it from a handler)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status
        super().__init__(
            headers=headers,
            text=_error_json(code, message, field),
            content_type="application/json",
        )


def _error_json(code: str, message: str, field: str | None = None) -> str:
    return ErrorBody(error=ApiError(code=code, message=message, field=field)).model_dump_json(
        by_alias=True, exclude_none=True
    )


def error_response(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        text=_error_json(code, message),
        content_type="application/json",
        headers=headers,
    )


def answer(request: web.Request, g: Generation, status: int = 200) -> web.Response:
    """A record as the answer: its public JSON, ``Location``, and while it runs ``Retry-After``."""
    deps = request.app[DEPS]
    headers = {"Location": f"/api/generations/{g.id}"}
    if not g.status.final:
        headers["Retry-After"] = "2"
    return web.json_response(g.public(base_url(request, deps)), status=status, headers=headers)


async def lookup(request: web.Request) -> Generation:
    """The record the route's ``{id}`` names; 400 for a malformed id, 404 for an unknown one."""
    rid = parse_request_id(request.match_info["id"])
    if rid is None:
        raise ApiFailure(400, "invalid_id", "a request id is 0x + 64 hex digits", "id")
    found = await request.app[DEPS].store.get(rid)
    if found is None:
        raise ApiFailure(404, "not_found", f"no request {rid}")
    return found


def listing_response(listing: BaseModel) -> web.Response:
    """A public listing (models, presets) as JSON that caches may keep for a minute."""
    return web.json_response(
        listing.model_dump(mode="json", by_alias=True),
        headers={"Cache-Control": "public, max-age=60"},
    )


def openapi_error(description: str, **headers: str) -> dict[str, Any]:
    """An OpenAPI answer with the JSON error body; ``headers``: name -> what it says."""
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def listing_path(operation_id: str, summary: str, described: str, schema: str) -> dict[str, Any]:
    """The OpenAPI path item of a public listing: 200 with ``schema``, or 429."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "responses": {
                "200": {
                    "description": described,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                    },
                },
                "429": openapi_error("rate limited", **{"Retry-After": "seconds to wait"}),
            },
        }
    }
