"""``GET /api/models``: the models this deployment serves, and the check of a request's model.

The API reads the same ``ACESTEPS_MODELS`` and ``ACESTEPS_MODEL_DEFAULT`` as the generators
(`acesteps.models`), so it refuses a request naming another model (422, field ``model``)
before it is queued, and lists the names, the default, each model's variant, sampling
settings and tasks. The weights digest it shows is the one the operator pinned in
``ACESTEPS_MODELS`` (``digest``): every generator refuses to serve a model whose files have
another, so the pin is what serves. The API neither reads weights nor hears from generators;
an unpinned model shows null, and each track's record and manifest carry the digest of the
weights that made it. Without ``ACESTEPS_MODELS`` the one model is described by the
generators' ``ACESTEPS_GENERATOR_*`` settings, which the API does not read: only its name is
known here.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from acesteps.models import Catalog, UnknownModel
from acesteps.options import api_name
from listener.api.deps import DEPS, ApiFailure, listing_path, listing_response

__all__ = ["ServedModelInfo", "ServedModelList", "add_routes", "check_model", "openapi_path"]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=api_name, populate_by_name=True, frozen=True)


class ServedModelInfo(_Camel):
    name: str = Field(description="what a request's model option names")
    default: bool = Field(description="the model of requests that name none")
    source: str | None = Field(
        None,
        description="a hub id, 'tiny', 'auto', or a checkpoint directory's name; null: set "
        "by the generators' own settings",
    )
    revision: str | None = None
    variant: Literal["turbo", "base", "sft"] | None = Field(
        None, description="turbo (few steps, guidance-distilled), base or sft; null: unknown"
    )
    steps: int | None = Field(None, description="denoising steps")
    guidance: float | None = Field(
        None, description="guidance scale; null: 1.0 for turbo checkpoints, 7.0 otherwise"
    )
    shift: float | None = None
    tasks: list[str] | None = Field(
        None, description="the ACE-Step tasks the variant supports (text2music, repaint, ...)"
    )
    weights_digest: str | None = Field(
        None,
        description="the weights digest pinned for it (generators refuse other weights); "
        "null when not pinned",
    )


class ServedModelList(_Camel):
    default: str
    models: list[ServedModelInfo]


def describe(catalog: Catalog) -> ServedModelList:
    items = []
    for name, served in catalog.models.items():
        spec = served.spec
        items.append(
            ServedModelInfo(
                name=name,
                default=name == catalog.default,
                source=served.public_source(),
                revision=spec.revision if spec else None,
                variant=served.variant,
                steps=spec.steps if spec else None,
                guidance=spec.guidance if spec else None,
                shift=spec.shift if spec else None,
                tasks=list(served.tasks) if served.tasks is not None else None,
                weights_digest=spec.digest if spec else None,
            )
        )
    return ServedModelList(default=catalog.default, models=items)


def check_model(catalog: Catalog, name: str | None) -> None:
    """422 ``invalid_request`` (field ``model``) for a model this deployment does not serve."""
    try:
        catalog.resolve(name)
    except UnknownModel as exc:
        raise ApiFailure(422, "invalid_request", f"model: {exc}", "model") from None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/models", get_models, name="models")


async def get_models(request: web.Request) -> web.Response:
    return listing_response(describe(request.app[DEPS].models))


def openapi_path() -> dict[str, Any]:
    """The OpenAPI path item of ``/api/models`` (its schema: ``ServedModelList``)."""
    return listing_path(
        "listModels",
        "The models this deployment serves, by name, and the default one",
        "the names a request's model option may take, with each "
        "model's variant, sampling settings, tasks and pinned weights digest",
        "ServedModelList",
    )
