"""The JSON Schemas of the topic messages, for the teams that consume the topics.

They are rendered from the message models (`acesteps.messages`) and the generation manifest
(`acesteps.manifest`), committed in ``schemas/``
and shipped in the package (``acesteps/data/schemas``, read with `importlib.resources`).
``acesteps schemas export [--dir DIR]`` writes them; ``acesteps schemas check`` exits 1 when a
directory differs from the code (a test runs it on the committed folder).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel

from acesteps import rendered
from acesteps.manifest import Manifest
from acesteps.messages import MESSAGE_TYPES

__all__ = ["PACKAGED_DIR", "export", "render", "stale"]

PACKAGED_DIR = Path(str(files("acesteps") / "data" / "schemas")).resolve()
"""The shipped schemas; in a checkout, the committed ``schemas/`` folder itself."""


def render() -> dict[str, str]:
    """File name -> JSON text of every message schema, and of the generation manifest."""
    out = {}
    models: dict[str, type[BaseModel]] = {**MESSAGE_TYPES, "Manifest": Manifest}
    for name, model in sorted(models.items()):
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"urn:acesteps:schema:{name}"
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export(directory: Path) -> list[Path]:
    return rendered.write(directory, render())


def stale(directory: Path = PACKAGED_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the code."""
    return rendered.stale(directory, render())
