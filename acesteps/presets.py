"""Style presets: the named LoRA adapters and tag sets an operator offers, read by the API and
the generators.

``ACESTEPS_PRESETS`` lists them: a JSON object, or the path of a file holding one, mapping a
name to the path of a LoRA adapter, or to an object::

    {"lofi": {"lora": "/adapters/lofi.safetensors", "scale": 0.8, "tags": ["lo-fi", "vinyl"],
              "digest": "sha256:...", "models": ["xl-turbo"], "description": "dusty lo-fi"},
     "orchestral": {"tags": ["orchestral", "strings", "cinematic"]}}

- ``lora``: a LoRA adapter of the model's DiT in one safetensors file (diffusers' key names or
  ACE-Step 1.5's PEFT ones), given as the file or as a directory holding
  ``pytorch_lora_weights.safetensors``, ``adapter_model.safetensors`` or exactly one
  ``.safetensors`` file. Only the generators read it (``generator.presets``);
- ``scale``: how strongly the adapter applies (default 1.0);
- ``tags``: added after the request's own tags, so a preset without ``lora`` is a fixed set of
  tags;
- ``digest``: ``sha256:`` and the adapter file's sha256 (what ``sha256sum FILE`` prints), a
  pin: generators refuse a file with another;
- ``models``: the served models (`acesteps.models`) it may be used with, since an adapter fits
  the DiT it was trained on (default: every model);
- ``description``: shown by ``GET /api/presets``.

A request names one with its ``preset`` option. The API refuses a name it does not offer, or
a preset with a model it is not for (422), before queueing; a generator fails such a request
with ``unknown_preset`` or ``preset_not_for_model``. Nothing here reads the adapter files or
imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from acesteps.models import DIGEST_PATTERN, MODEL_NAME_PATTERN, json_table

__all__ = [
    "PRESET_NAME_PATTERN",
    "Preset",
    "PresetCatalog",
    "PresetNotForModel",
    "PresetSpec",
    "PresetsSettings",
    "UnknownPreset",
]

PRESET_NAME_PATTERN: Final = MODEL_NAME_PATTERN
MAX_PRESET_TAGS: Final = 16

_Name = Annotated[str, Field(pattern=PRESET_NAME_PATTERN)]
_Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=48)]


class UnknownPreset(ValueError):
    """A request names a preset this deployment does not offer."""

    code = "unknown_preset"

    def __init__(self, name: str, offered: tuple[str, ...]) -> None:
        names = ", ".join(offered) if offered else "none"
        super().__init__(
            f"unknown preset {name!r}: this deployment offers {names} (GET /api/presets)"
        )


class PresetNotForModel(ValueError):
    """A request names a preset together with a model the preset is not for."""

    code = "preset_not_for_model"

    def __init__(self, name: str, model: str, models: tuple[str, ...]) -> None:
        super().__init__(
            f"preset {name!r} is for the model(s) {', '.join(models)}, not {model!r} (its "
            "adapter fits the model it was trained on)"
        )


class PresetSpec(BaseModel):
    """One preset: a LoRA adapter and its scale, tags, or both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora: str | None = Field(
        None, min_length=1, description="the adapter's safetensors file, or its directory"
    )
    scale: float = Field(1.0, ge=0, le=4, description="how strongly the adapter applies")
    tags: tuple[_Tag, ...] = Field(
        (), max_length=MAX_PRESET_TAGS, description="added after the request's tags"
    )
    digest: str | None = Field(
        None, pattern=DIGEST_PATTERN, description="sha256: of the adapter file (a pin)"
    )
    models: tuple[_Name, ...] | None = Field(
        None, min_length=1, description="the served models it is for (default: all)"
    )
    description: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _something(self) -> PresetSpec:
        if self.lora is None and not self.tags:
            raise ValueError("a preset needs a LoRA adapter ('lora'), tags, or both")
        if self.digest is not None and self.lora is None:
            raise ValueError("'digest' pins an adapter file: it needs 'lora'")
        return self


@dataclass(frozen=True)
class Preset:
    name: str
    spec: PresetSpec


@dataclass(frozen=True)
class PresetCatalog:
    """The offered presets, in the operator's order."""

    presets: Mapping[str, PresetSpec]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.presets)

    def resolve(self, name: str | None, model: str) -> Preset | None:
        """The preset a request on served model ``model`` names (None: none named);
        `UnknownPreset` or `PresetNotForModel` otherwise."""
        if name is None:
            return None
        spec = self.presets.get(name)
        if spec is None:
            raise UnknownPreset(name, self.names)
        if spec.models is not None and model not in spec.models:
            raise PresetNotForModel(name, model, spec.models)
        return Preset(name, spec)


class PresetsSettings(BaseModel):
    """``ACESTEPS_PRESETS``: a part of the settings of the API (``listener.settings``) and of
    the generator (``generator.settings``)."""

    presets: Annotated[dict[_Name, PresetSpec] | None, NoDecode] = Field(
        None,
        description=(
            "style presets: a JSON object (or a file holding one) name -> LoRA adapter path or "
            '{"lora", "scale", "tags", "digest", "models", "description"} (acesteps.presets); '
            "unset: none"
        ),
    )

    @field_validator("presets", mode="before")
    @classmethod
    def _parse_presets(cls, value: object) -> object:
        return json_table(value, shorthand="lora")

    def preset_catalog(self) -> PresetCatalog:
        return PresetCatalog(dict(self.presets or {}))
