"""Files generated from code and committed (the JSON Schemas, the contract's artifacts): write
them, and tell which committed ones differ from what the code renders now."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["stale", "write"]


def write(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each file name -> text into ``directory``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        (directory / name).write_text(text)
        written.append(directory / name)
    return written


def stale(directory: Path, files: Mapping[str, str]) -> list[str]:
    """Names of the files that are missing from ``directory`` or differ from their text."""
    return [
        name
        for name, text in files.items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]
