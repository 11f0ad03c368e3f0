"""The weights digest of a checkpoint: which files, exactly, made a track.

``sha256:`` + sha256 over the lines ``<sha256 of the file>  <path relative to the
checkpoint>`` of every regular file under the checkpoint directory (weights, configs,
tokenizer: all of them decide the output), sorted by the path's bytes, as ``sha256sum`` would
list them. Anyone can recompute it without this code, in the checkpoint directory::

    find -L . -type f ! -path '*/.*' -printf '%P\n' | LC_ALL=C sort \
      | xargs -d '\n' sha256sum | sha256sum

Links are followed (a Hugging Face snapshot links into its blob store); hidden files and
folders are left out.

Hashing a real checkpoint takes seconds to minutes, so each file's sha256 is cached by path,
size and modification time in a JSON file; a file that changed is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

__all__ = ["file_sha256", "weights_digest"]

log = logging.getLogger(__name__)
_BLOCK = 1 << 20


def weights_digest(directory: Path, cache_file: Path | None = None) -> str:
    directory = directory.resolve()
    cache = _load(cache_file)
    lines, changed = [], False
    # Sorted by the relative path's UTF-8 bytes, as `LC_ALL=C sort` does, not by Path order.
    files = {path.relative_to(directory).as_posix(): path for path in _files(directory)}
    for relative in sorted(files, key=lambda name: name.encode()):
        path = files[relative]
        stat = path.stat()
        key = str(path)
        entry = cache.get(key)
        if entry is None or (entry["size"], entry["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
            sha = file_sha256(path)
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
            cache[key] = entry
            changed = True
        lines.append(f"{entry['sha256']}  {relative}\n")
    if changed and cache_file is not None:
        _save(cache_file, cache)
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _files(directory: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / name for name in files if not name.startswith(".")]
    return found


def file_sha256(path: Path) -> str:
    """The sha256 of the file's bytes, in hex (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _load(cache_file: Path | None) -> dict[str, dict[str, int | str]]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        loaded: dict[str, dict[str, int | str]] = json.loads(cache_file.read_text())
        return loaded
    except (OSError, ValueError):
        log.warning("ignoring an unreadable digest cache %s", cache_file)
        return {}


def _save(cache_file: Path, cache: dict[str, dict[str, int | str]]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(cache_file)  # readers (another worker) never see half a file
