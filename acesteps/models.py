"""The models a deployment serves, by name: one setting read by the API and the generators.

``ACESTEPS_MODELS`` lists them: a JSON object, or the path of a file holding one, mapping a
name to the model's source, or to an object::

    {"xl-turbo": {"source": "ACE-Step/acestep-v15-xl-turbo-diffusers", "variant": "turbo"},
     "xl-base": {"source": "/models/acestep-v15-xl-base", "variant": "base", "steps": 50,
                 "guidance": 7.0, "digest": "sha256:..."},
     "tiny": "tiny"}

with ``source`` (a hub id, a local checkpoint directory, ``tiny`` or ``auto``, as
``ACESTEPS_GENERATOR_MODEL`` takes), ``revision`` (hub), ``variant`` (``turbo``, ``base`` or
``sft``; else guessed from the source's name), ``steps``, ``guidance`` (None: 1.0 for turbo,
7.0 otherwise), ``shift`` and ``digest`` (the weights digest, `generator.digest`, that the
generators must find: a pin; ``acesteps models list`` prints it). ``ACESTEPS_MODEL_DEFAULT``
names the model of a request that names none (default: the first listed).

Without ``ACESTEPS_MODELS`` the deployment serves one model, named ``ACESTEPS_MODEL_DEFAULT``
or ``default``, described by the generator's single-model settings (``ACESTEPS_GENERATOR_MODEL``,
``_REVISION``, ``_STEPS``, ``_GUIDANCE_SCALE``, ``_SHIFT``), which the API does not read.

The API refuses a request naming another model (422) before it is queued, and lists the
models at ``GET /api/models``; a generator serves every listed model. So both must see the
same setting. Nothing here imports torch or the hub client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

__all__ = [
    "DEFAULT_NAME",
    "MODEL_NAME_PATTERN",
    "TASKS",
    "Catalog",
    "ModelSpec",
    "ModelsSettings",
    "ServedModel",
    "UnknownModel",
    "Variant",
    "guess_variant",
    "json_table",
]

DEFAULT_NAME: Final = "default"
"""The name of the one model of a deployment without ``ACESTEPS_MODELS``."""

MODEL_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"

Variant = Literal["turbo", "base", "sft"]

TASKS: Final[dict[str, tuple[str, ...]]] = {
    # Turbo checkpoints are distilled for text2music and what shares its path; the base and
    # SFT models also take the source-audio tasks (AceStepPipeline's TASK_TYPES).
    "turbo": ("text2music", "repaint", "cover"),
    "base": ("text2music", "repaint", "cover", "extract", "lego", "complete"),
    "sft": ("text2music", "repaint", "cover", "extract", "lego", "complete"),
}


class UnknownModel(ValueError):
    """A request names a model this deployment does not serve."""

    def __init__(self, name: str, served: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown model {name!r}: this deployment serves {', '.join(served)} (GET /api/models)"
        )
        self.name = name


def guess_variant(source: str) -> Variant | None:
    """The variant a source's name says (``...-turbo-...``, ``...-sft``, ``...-base``)."""
    lowered = source.lower()
    if source == "tiny" or source == "auto" or "turbo" in lowered:
        return "turbo"
    if "sft" in lowered:
        return "sft"
    if "base" in lowered:
        return "base"
    return None


class ModelSpec(BaseModel):
    """One served model: where its checkpoint is and how it is sampled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(
        min_length=1, description="hub id, local checkpoint directory, 'tiny' or 'auto'"
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    variant: Variant | None = Field(
        None, description="turbo, base or sft (default: what the source's name says)"
    )
    steps: int = Field(8, ge=1, le=200, description="denoising steps")
    guidance: float | None = Field(
        None, ge=0, le=30, description="None: 1.0 for turbo checkpoints, 7.0 otherwise"
    )
    shift: float = Field(3.0, gt=0, le=10, description="timestep schedule shift")
    digest: str | None = Field(
        None,
        pattern=DIGEST_PATTERN,
        description="the weights digest the checkpoint must have (generators refuse others)",
    )

    @field_validator("source")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("empty model source")
        return value

    @property
    def known_variant(self) -> Variant | None:
        return self.variant or guess_variant(self.source)


@dataclass(frozen=True)
class ServedModel:
    name: str
    spec: ModelSpec | None
    """None: described by the generators' own ``ACESTEPS_GENERATOR_*`` settings."""

    @property
    def variant(self) -> Variant | None:
        return None if self.spec is None else self.spec.known_variant

    @property
    def tasks(self) -> tuple[str, ...] | None:
        return None if self.variant is None else TASKS[self.variant]

    def public_source(self) -> str | None:
        """The source as others may see it: a directory by its name only."""
        if self.spec is None:
            return None
        source = self.spec.source
        if source.startswith(("/", ".", "~")):
            return Path(source).expanduser().name or source
        return source


@dataclass(frozen=True)
class Catalog:
    """The served models in the operator's order, and the default one."""

    models: Mapping[str, ServedModel]
    default: str

    @classmethod
    def single(cls, name: str = DEFAULT_NAME, spec: ModelSpec | None = None) -> Catalog:
        return cls({name: ServedModel(name, spec)}, name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.models)

    def resolve(self, name: str | None) -> ServedModel:
        """The model a request asks for (None: the default); `UnknownModel` otherwise."""
        found = self.models.get(self.default if name is None else name)
        if found is None:
            raise UnknownModel(str(name), self.names)
        return found


def json_table(value: object, shorthand: str = "source") -> object:
    """A table setting (``ACESTEPS_MODELS``, ``ACESTEPS_PRESETS``) as JSON text, or as the
    path of a JSON file; an entry given as a string is ``{shorthand: string}``."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not text.startswith("{"):
            path = Path(text).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise ValueError(f"neither a JSON object nor a readable file: {exc}") from None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if isinstance(value, dict):
        return {
            name: {shorthand: entry} if isinstance(entry, str) else entry
            for name, entry in value.items()
        }
    return value


ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]


class ModelsSettings(BaseModel):
    """``ACESTEPS_MODELS`` and ``ACESTEPS_MODEL_DEFAULT``: a part of the settings of the API
    (``listener.settings``) and of the generator (``generator.settings``), which read them
    from the environment with the rest (`acesteps.settings`)."""

    models: Annotated[dict[ModelName, ModelSpec] | None, NoDecode] = Field(
        None,
        description=(
            "the served models: a JSON object (or a file holding one) name -> source or "
            '{"source", "revision", "variant", "steps", "guidance", "shift", "digest"}; '
            "unset: one model from the ACESTEPS_GENERATOR_* settings (acesteps.models)"
        ),
    )
    model_default: ModelName | None = Field(
        None,
        description="the model of requests that name none (default: the first of "
        "ACESTEPS_MODELS; without it, the one model's name, 'default' if unset)",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        return json_table(value)

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: dict[str, ModelSpec] | None) -> dict[str, ModelSpec] | None:
        if value is not None and not value:
            raise ValueError("lists no model")
        return value

    @field_validator("model_default", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("model_default")
    @classmethod
    def _listed_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        models = info.data.get("models")
        if value is not None and models is not None and value not in models:
            raise ValueError(f"{value!r} is not one of ACESTEPS_MODELS ({', '.join(models)})")
        return value

    def catalog(self, single: ModelSpec | None = None) -> Catalog:
        """The served models; ``single`` describes the one model without ``ACESTEPS_MODELS``
        (the generator knows it from its own settings; the API does not)."""
        if self.models is None:
            return Catalog.single(self.model_default or DEFAULT_NAME, single)
        served = {name: ServedModel(name, spec) for name, spec in self.models.items()}
        return Catalog(served, self.model_default or next(iter(served)))
