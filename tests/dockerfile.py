"""The Dockerfile's stages, for the tests that check compose and Kubernetes files against it."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DOCKERFILE", "dockerfile_stages"]

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def dockerfile_stages() -> dict[str, str]:
    """Each ``FROM ... AS name`` stage's lines, by name."""
    stages: dict[str, str] = {}
    name = None
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            name = m[1]
            stages[name] = ""
        if name is not None:
            stages[name] += line + "\n"
    return stages
