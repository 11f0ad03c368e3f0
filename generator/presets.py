"""A request's style preset, as a generator applies it: its tags and its LoRA adapter.

The operator's presets are ``ACESTEPS_PRESETS`` (`acesteps.presets`). For a request that
names one, `Presets.style` gives the `generator.jobs.Style` of its job:

- the preset's tags, added after the request's own (`generator.jobs.build_caption`);
- its LoRA adapter, if it has one: the safetensors file (a directory is searched for
  ``pytorch_lora_weights.safetensors``, ``adapter_model.safetensors``, or its only
  ``.safetensors`` file), its scale, and the sha256 of the file's bytes. The digest is what
  the manifest and the track's record name; a preset that pins one (``digest``) is refused
  when the file has another. The model loads the adapter by that digest and checks it again
  (`generator.model`), so the weights that ran are the bytes recorded.

Refusals are `GenerationFailed` records, never a crash: ``unknown_preset`` (a name this
generator does not offer: the API refuses those before queueing, so this is for chain
requests and other producers), ``preset_not_for_model``, and ``preset_unavailable`` (the
adapter file is missing, unreadable or not the pinned one: the operator's part).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Final

from acesteps.presets import (
    Preset,
    PresetCatalog,
    PresetNotForModel,
    UnknownPreset,
)
from generator.digest import file_sha256
from generator.errors import PermanentGeneratorError
from generator.jobs import Adapter, Style

__all__ = [
    "PresetNotForModelError",
    "PresetUnavailable",
    "Presets",
    "UnknownPresetError",
    "adapter_file",
    "file_digest",
    "has_peft",
]

WEIGHT_NAMES: Final = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
"""The adapter file in a directory: diffusers' name, then PEFT's (ACE-Step 1.5's trainer)."""


class UnknownPresetError(PermanentGeneratorError):
    """The request names a preset this generator does not offer."""

    code = "unknown_preset"


class PresetNotForModelError(PermanentGeneratorError):
    """The request names a preset together with a model it is not for."""

    code = "preset_not_for_model"


class PresetUnavailable(PermanentGeneratorError):
    """The preset's adapter cannot be used: missing, unreadable, not the pinned file, or not
    a LoRA of this model."""

    code = "preset_unavailable"


def adapter_file(path: Path) -> Path:
    """The safetensors file of an adapter given as a file or a directory."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise PresetUnavailable(f"no such adapter file or directory: {path.name}")
    for name in WEIGHT_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.safetensors"))
    if len(found) != 1:
        raise PresetUnavailable(
            f"adapter directory {path.name} holds {len(found)} .safetensors files and none "
            f"named {' or '.join(WEIGHT_NAMES)}: name the file in ACESTEPS_PRESETS"
        )
    return found[0]


def has_peft() -> bool:
    return importlib.util.find_spec("peft") is not None


def file_digest(path: Path) -> str:
    """``sha256:`` and the sha256 of the file's bytes (what ``sha256sum`` prints)."""
    return "sha256:" + file_sha256(path)


class Presets:
    """The presets of one generator; adapter digests cached by path, size and mtime."""

    def __init__(self, catalog: PresetCatalog | None = None) -> None:
        self.catalog = catalog or PresetCatalog({})
        self._digests: dict[tuple[str, int, int], str] = {}

    def style(self, name: str | None, model: str) -> Style | None:
        """The style of a request naming preset ``name`` on served model ``model``."""
        try:
            preset = self.catalog.resolve(name, model)
        except UnknownPreset as exc:
            raise UnknownPresetError(str(exc)) from None
        except PresetNotForModel as exc:
            raise PresetNotForModelError(str(exc)) from None
        if preset is None:
            return None
        return Style(tags=preset.spec.tags, adapter=self._adapter(preset))

    def _adapter(self, preset: Preset) -> Adapter | None:
        spec = preset.spec
        if spec.lora is None:
            return None
        try:
            file = adapter_file(Path(spec.lora).expanduser())
            digest = self.digest(file)
        except OSError as exc:
            raise PresetUnavailable(f"preset {preset.name!r}: {exc.strerror}") from None
        except PresetUnavailable as exc:
            raise PresetUnavailable(f"preset {preset.name!r}: {exc}") from None
        if spec.digest is not None and digest != spec.digest:
            raise PresetUnavailable(
                f"preset {preset.name!r}: the adapter {file.name} has digest {digest}, but "
                f"ACESTEPS_PRESETS pins {spec.digest}: refusing another adapter"
            )
        return Adapter(preset=preset.name, path=str(file), scale=spec.scale, digest=digest)

    def check(self) -> list[str]:
        """What is wrong with the presets' adapters now (for the start-up log): a preset that
        cannot run only fails its own requests, so the service starts anyway."""
        problems = []
        for name, spec in self.catalog.presets.items():
            try:
                self._adapter(Preset(name, spec))
            except PresetUnavailable as exc:
                problems.append(str(exc))
        if any(s.lora for s in self.catalog.presets.values()) and not has_peft():
            problems.append("LoRA presets need the peft package (pip install peft)")
        return problems

    def digest(self, file: Path) -> str:
        stat = os.stat(file)
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_digest(file)
        return self._digests[key]
