"""``GET /api/presets``: the style presets this deployment offers, and the check of a request's
preset.

The API reads the same ``ACESTEPS_PRESETS`` as the generators (`acesteps.presets`), so it
refuses a request naming a preset it does not offer, or a preset together with a model the
preset is not for (422, field ``preset``), before it is queued, and lists each preset's
description, tags, whether it has a LoRA adapter (its file's name, never the path it has on
the generators' hosts), the adapter's scale, the digest pinned for it and the models it is for.
As for models (`listener.api.served`), the digest shown is the operator's pin, which every
generator enforces; an unpinned adapter shows null, and each track's record
(``adapterDigest``) and manifest (``adapter``) carry the digest of the file that made it. The
API never reads the adapter files.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from acesteps.options import api_name
from acesteps.presets import PresetCatalog, PresetNotForModel, PresetSpec, UnknownPreset
from listener.api.deps import DEPS, ApiFailure, listing_path, listing_response

__all__ = [
    "PresetInfo",
    "PresetList",
    "add_routes",
    "check_preset",
    "describe",
    "get_presets",
    "openapi_path",
]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=api_name, populate_by_name=True, frozen=True)


class PresetInfo(_Camel):
    name: str = Field(description="what a request's preset option names")
    description: str = Field(description="the operator's words about it (may be empty)")
    tags: list[str] = Field(description="added after the request's own tags")
    lora: bool = Field(description="it applies a LoRA adapter to the model")
    adapter_file: str | None = Field(
        None,
        description="the adapter's file (or directory) name, never its path; null: no adapter",
    )
    scale: float | None = Field(
        None, description="how strongly the adapter applies; null: no adapter"
    )
    digest: str | None = Field(
        None,
        description="the adapter file's sha256 pinned for it (generators refuse another file); "
        "null when not pinned or without an adapter",
    )
    models: list[str] | None = Field(
        None, description="the served models it is for (GET /api/models); null: every model"
    )


class PresetList(_Camel):
    presets: list[PresetInfo]


def adapter_name(spec: PresetSpec) -> str | None:
    """The adapter as others may see it: its file's or directory's name only."""
    if spec.lora is None:
        return None
    return PurePath(spec.lora).name or spec.lora


def describe(catalog: PresetCatalog) -> PresetList:
    return PresetList(
        presets=[
            PresetInfo(
                name=name,
                description=spec.description,
                tags=list(spec.tags),
                lora=spec.lora is not None,
                adapter_file=adapter_name(spec),
                scale=spec.scale if spec.lora is not None else None,
                digest=spec.digest,
                models=list(spec.models) if spec.models is not None else None,
            )
            for name, spec in catalog.presets.items()
        ]
    )


def check_preset(catalog: PresetCatalog, name: str | None, model: str) -> None:
    """422 ``invalid_request`` (field ``preset``) for a preset this deployment does not offer,
    or one that is not for the request's served model ``model`` (its resolved name)."""
    try:
        catalog.resolve(name, model)
    except (UnknownPreset, PresetNotForModel) as exc:
        raise ApiFailure(422, "invalid_request", f"preset: {exc}", "preset") from None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/presets", get_presets, name="presets")


async def get_presets(request: web.Request) -> web.Response:
    return listing_response(describe(request.app[DEPS].presets))


def openapi_path() -> dict[str, Any]:
    """The OpenAPI path item of ``/api/presets`` (its schema: ``PresetList``)."""
    return listing_path(
        "listPresets",
        "The style presets this deployment offers, by name",
        "the names a request's preset option may take, with each "
        "preset's tags, adapter (file name, scale, pinned digest) and models",
        "PresetList",
    )
