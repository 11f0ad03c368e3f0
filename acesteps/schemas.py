"""Export the JSON Schemas of the topic messages to ``schemas/`` for other teams.

``acesteps schemas export`` writes one ``<Model>.json`` per message type; a test fails when the
committed files differ from what the code produces, so the folder is always current.
"""

from __future__ import annotations

import json
from pathlib import Path

from acesteps.messages import MESSAGE_TYPES

__all__ = ["DEFAULT_DIR", "export", "render", "stale"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "schemas"


def render() -> dict[str, str]:
    """File name -> JSON text of every message schema."""
    out = {}
    for name, model in sorted(MESSAGE_TYPES.items()):
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"urn:acesteps:schema:{name}"
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render().items():
        path = directory / filename
        path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path = DEFAULT_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the code."""
    return [
        filename
        for filename, text in render().items()
        if not (directory / filename).is_file() or (directory / filename).read_text() != text
    ]
