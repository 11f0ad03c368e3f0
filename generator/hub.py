"""Fetching a checkpoint from the Hugging Face hub, every file checked against the hub's hash.

`pull` is what ``acesteps models pull`` and the generator's first-run download run:

1. the hub's model info with file metadata (``HfApi.model_info(files_metadata=True)``): the
   commit the revision points at, and each file's size and hash (the LFS sha256 for weights,
   the git blob id, a sha1, for small files kept in git);
2. the size, announced before anything is fetched, and the free disk space, checked: too
   little refuses the pull (`NotEnoughSpace`, naming the space needed);
3. each file that is not here yet is downloaded into ``DEST/.acesteps-download/`` and resumed
   where it stopped when a pull is interrupted: what a partial file holds is kept, and the
   rest asked for with a ``Range`` request (huggingface_hub's ``http_get`` with
   ``resume_size``; it also retries a dropped connection from where it stopped). With a
   progress bar per file (huggingface_hub's; ``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it);
4. each downloaded file is hashed and compared with the hub's hash: a file that does not match
   is deleted and the pull refused (`ChecksumMismatch`); one that matches is moved into place;
5. ``DEST/.acesteps-pull.json`` records the repository, the commit and every verified file;
   it says ``complete`` once all are. A directory without a complete record is not loaded as a
   pulled checkpoint.

Why not ``hf_hub_download``/``snapshot_download``: from huggingface_hub 1.x on they download
each file into a temporary file unique to the process and delete it on failure, so a pull of a
multi-GB file that is interrupted starts that file again; and they check sizes, not hashes.

The endpoint is the one given, else ``HF_ENDPOINT`` as the environment has it when the pull
runs (huggingface_hub itself reads it only once, at import), else huggingface.co;
``HF_TOKEN`` is sent when set. Hidden files (the record, partial downloads) are not
part of the checkpoint: the weights digest (`generator.digest`) leaves them out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from generator.errors import ModelUnavailable

__all__ = [
    "PULL_RECORD",
    "ChecksumMismatch",
    "HubUnreachable",
    "LocalCheckpoint",
    "NotEnoughSpace",
    "Remote",
    "RemoteFile",
    "checkpoint_variant",
    "describe_local",
    "human",
    "local_copy",
    "pull",
    "pulled_dir",
    "pulled_record",
    "remote_checkpoint",
]

log = logging.getLogger(__name__)

PULL_RECORD: Final = ".acesteps-pull.json"
PARTIAL_DIR: Final = ".acesteps-download"
_BLOCK = 1 << 20

Say = Callable[[str], None]


class HubUnreachable(ModelUnavailable):
    """The hub did not answer (no network, HF_HUB_OFFLINE, a proxy, a server error)."""

    code = "hub_unreachable"


class NotEnoughSpace(ModelUnavailable):
    code = "not_enough_space"


class ChecksumMismatch(ModelUnavailable):
    code = "checksum_mismatch"


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None
    """The LFS sha256 (weights); None for a file kept in git."""
    git_sha1: str | None
    """The git blob id of a file kept in git (sha1 of ``blob <size>\\0`` + the bytes)."""


@dataclass(frozen=True)
class Remote:
    repo_id: str
    revision: str | None
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def human(size: float) -> str:
    """``12.3 GB`` (decimal units, as the hub shows sizes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _endpoint(endpoint: str | None) -> str | None:
    """The hub's URL: ``endpoint``, else ``HF_ENDPOINT`` as the environment has it now
    (huggingface_hub reads it once, when it is imported), else the library's default."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def remote_checkpoint(
    repo_id: str,
    revision: str | None = None,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    timeout_s: float | None = 30.0,
) -> Remote:
    """The files of ``repo_id`` at ``revision`` with their sizes and hashes, from the hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi(endpoint=_endpoint(endpoint), token=token).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=timeout_s
        )
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelUnavailable(
            f"{repo_id}{'@' + revision if revision else ''} is not on the hub (or needs "
            f"HF_TOKEN): {exc}"
        ) from None
    except HfHubHTTPError as exc:
        raise HubUnreachable(f"the hub answered {exc}") from None
    except Exception as exc:  # the HTTP client's connection errors, offline mode, timeouts
        raise HubUnreachable(f"{type(exc).__name__}: {exc}") from None
    files = []
    for sibling in info.siblings or ():
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        if size is None:
            raise HubUnreachable(f"the hub listed {sibling.rfilename} without its size")
        files.append(
            RemoteFile(
                path=sibling.rfilename,
                size=int(size),
                sha256=lfs.sha256 if lfs is not None else None,
                git_sha1=None if lfs is not None else sibling.blob_id,
            )
        )
    if info.sha is None:
        raise HubUnreachable(f"the hub named no commit for {repo_id}")
    return Remote(repo_id, revision, info.sha, tuple(sorted(files, key=lambda f: f.path)))


def pulled_dir(models_dir: Path, repo_id: str, revision: str | None = None) -> Path:
    """Where a pull without ``--local-dir`` puts ``repo_id``: ``MODELS_DIR/org--name[@rev]``."""
    name = repo_id.replace("/", "--") + (f"@{revision}" if revision else "")
    return models_dir / name


def pulled_record(directory: Path) -> dict[str, Any] | None:
    """The pull record of ``directory`` when the pull completed and its files are all there
    with their sizes; else None."""
    try:
        record: dict[str, Any] = json.loads((directory / PULL_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not record.get("complete"):
        return None
    for path, entry in record.get("files", {}).items():
        try:
            if (directory / path).stat().st_size != entry["size"]:
                return None
        except OSError:
            return None
    return record


def local_copy(models_dir: Path, repo_id: str, revision: str | None = None) -> Path | None:
    """A complete pulled copy of ``repo_id`` at ``revision`` in ``models_dir``, else its
    Hugging Face cache snapshot (``huggingface-cli download``, or an earlier version of this
    service), else None. Never touches the network."""
    for candidate in (pulled_dir(models_dir, repo_id, revision), pulled_dir(models_dir, repo_id)):
        record = pulled_record(candidate)
        if record is not None and revision in (None, record["revision"], record["commit"]):
            return candidate
    return _hub_cache_snapshot(repo_id, revision)


def _hub_cache_snapshot(repo_id: str, revision: str | None) -> Path | None:
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache
    except ImportError:  # the command line without the generator's packages
        return None
    if not isinstance(try_to_load_from_cache(repo_id, "model_index.json", revision=revision), str):
        return None
    try:
        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # incomplete or unreadable: not a usable copy
        return None
    return path if (path / "model_index.json").is_file() else None


def _free_bytes(directory: Path) -> int:
    for candidate in (directory, *directory.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def _file_hash(path: Path, file: RemoteFile) -> tuple[str, str | None]:
    """(what was computed, what the hub lists) for ``file`` at ``path``."""
    if file.sha256 is not None:
        digest = hashlib.sha256()
        want: str | None = file.sha256
    else:
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
        want = file.git_sha1
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest(), want


def _matches(path: Path, file: RemoteFile) -> bool:
    if path.stat().st_size != file.size:
        return False
    got, want = _file_hash(path, file)
    return want is None or got == want


def _write_record(dest: Path, remote: Remote, done: dict[str, RemoteFile], complete: bool) -> None:
    record = {
        "repo_id": remote.repo_id,
        "revision": remote.revision,
        "commit": remote.commit,
        "complete": complete,
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {
            path: {k: v for k, v in asdict(f).items() if k != "path"}
            for path, f in sorted(done.items())
        },
    }
    tmp = dest / f"{PULL_RECORD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(dest / PULL_RECORD)


def _recorded(dest: Path, remote: Remote) -> dict[str, RemoteFile]:
    """The files an earlier pull of the same commit verified and left in place."""
    try:
        record = json.loads((dest / PULL_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    if record.get("commit") != remote.commit:
        return {}
    wanted = {f.path: f for f in remote.files}
    kept = {}
    for path, entry in record.get("files", {}).items():
        file = wanted.get(path)
        if file is None or {k: v for k, v in asdict(file).items() if k != "path"} != entry:
            continue
        try:
            if (dest / path).stat().st_size == file.size:
                kept[path] = file
        except OSError:
            pass
    return kept


def pull(
    repo_id: str | Remote,
    dest: Path,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    say: Say = _stderr,
) -> Path:
    """Download the checkpoint into ``dest`` (see the module docstring); returns ``dest``."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    endpoint = _endpoint(endpoint)
    remote = (
        repo_id
        if isinstance(repo_id, Remote)
        else remote_checkpoint(repo_id, revision, endpoint=endpoint, token=token)
    )
    dest = dest.expanduser().resolve()
    partial_dir = dest / PARTIAL_DIR
    done = _recorded(dest, remote)
    # 1. What is here already: recorded files, and files in place that hash right.
    for file in remote.files:
        final = dest / file.path
        if file.path not in done and final.is_file() and _matches(final, file):
            done[file.path] = file
    todo = [f for f in remote.files if f.path not in done]
    partial = {
        f.path: min((partial_dir / f.path).stat().st_size, f.size)
        for f in todo
        if (partial_dir / f.path).is_file()
    }
    need = sum(f.size for f in todo) - sum(partial.values())
    where = f"{remote.repo_id}@{remote.commit[:12]}"
    say(
        f"{where}: {len(remote.files)} files, {human(remote.total_bytes)}; "
        + (f"{human(need)} to download into {dest}" if todo else f"all here in {dest}")
    )
    # 2. Room for the rest.
    free = _free_bytes(dest)
    if need > free:
        raise NotEnoughSpace(
            f"{where} needs {human(need)} of free disk space in {dest} "
            f"({human(remote.total_bytes)} in all); only {human(free)} is free there. Free "
            f"some space, or pull it onto another disk: acesteps models pull "
            f"{remote.repo_id} --local-dir DIR"
        )
    dest.mkdir(parents=True, exist_ok=True)
    _write_record(dest, remote, done, complete=not todo)
    # 3-4. Each missing file: resumed, checked, moved into place.
    headers = build_hf_headers(token=token)
    for n, file in enumerate(todo, 1):
        part = partial_dir / file.path
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.is_file() else 0
        if have > file.size:
            part.unlink()
            have = 0
        resumed = f", resuming at {human(have)}" if have else ""
        say(f"[{n}/{len(todo)}] {file.path} ({human(file.size)}{resumed})")
        url = hf_hub_url(remote.repo_id, file.path, revision=remote.commit, endpoint=endpoint)
        with part.open("ab") as out:
            http_get(
                url,
                out,
                resume_size=have,
                headers=dict(headers),
                expected_size=file.size,
                displayed_filename=file.path,
            )
        got, want = _file_hash(part, file)
        if want is not None and got != want:
            part.unlink()
            kind = "sha256" if file.sha256 is not None else "git sha1"
            raise ChecksumMismatch(
                f"{where}: {file.path} has {kind} {got}, but the hub lists {want}: the file "
                "was deleted and the checkpoint is refused. Pull it again; if it fails the "
                "same way, the download is being altered on its way here"
            )
        final = dest / file.path
        final.parent.mkdir(parents=True, exist_ok=True)
        part.replace(final)
        done[file.path] = file
        _write_record(dest, remote, done, complete=len(done) == len(remote.files))
    shutil.rmtree(partial_dir, ignore_errors=True)
    say(f"{where}: complete and checked in {dest}")
    return dest


# ------------------------------------------------------------------ what is here


@dataclass(frozen=True)
class LocalCheckpoint:
    path: Path
    variant: str | None
    size_bytes: int
    repo_id: str | None
    commit: str | None


def describe_local(directory: Path) -> LocalCheckpoint | None:
    """What a checkpoint directory holds (None: not a diffusers ACE-Step checkpoint)."""
    if not (directory / "model_index.json").is_file():
        return None
    record = pulled_record(directory)
    size = 0
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # as the weights digest does
        size += sum((Path(root) / n).stat().st_size for n in names if not n.startswith("."))
    return LocalCheckpoint(
        path=directory,
        variant=checkpoint_variant(directory),
        size_bytes=size,
        repo_id=record["repo_id"] if record else None,
        commit=record["commit"] if record else None,
    )


def checkpoint_variant(directory: Path) -> str | None:
    """turbo, base or sft, as the DiT's config says (``is_turbo``, ``model_version``)."""
    try:
        config = json.loads((directory / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    version = str(config.get("model_version") or "").lower()
    if config.get("is_turbo") or "turbo" in version:
        return "turbo"
    for variant in ("sft", "base"):
        if variant in version:
            return variant
    return None
