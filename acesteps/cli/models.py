"""``acesteps models pull NAME [--local-dir DIR]`` and ``acesteps models list [--json]``.

``pull`` fetches a checkpoint from the Hugging Face hub with the generator's own checks
(`generator.hub`: size announced, free space checked, every file checked against the hub's
hash, interrupted downloads resumed). NAME is a hub id, or a served model of
``ACESTEPS_MODELS`` whose source is one. Without ``--local-dir`` the checkpoint goes where the
generator looks for it (``ACESTEPS_MODELS_DIR``); with it, into DIR, to copy to a machine
without hub access, where ``ACESTEPS_GENERATOR_MODEL=DIR`` (or the model's ``source`` in
``ACESTEPS_MODELS``) serves it. Exit 0 when the checkpoint is complete and checked, 1 when it
is not (unreachable hub, too little space, a file that does not match), 2 for a bad argument.

``list`` shows the checkpoints present on this machine: each served model (name, variant,
size, the weights digest the manifest records, `generator.digest`, and where it is; a model
whose files are not here yet says so) and every other checkpoint pulled into
``ACESTEPS_MODELS_DIR``. It reads files only: no network, no torch.

The generator's modules are imported when a command runs (`tests/unit/test_layout.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    pull = sub.add_parser(
        "pull", help="fetch a checkpoint from the hub, every file checked against its hash"
    )
    pull.add_argument("name", help="a hub id, or a served model (ACESTEPS_MODELS) of one")
    pull.add_argument(
        "--local-dir", help="put it in this directory (default: ACESTEPS_MODELS_DIR/<org>--<name>)"
    )
    pull.add_argument("--revision", help="branch, tag or commit (default: the model's, or main)")
    listing = sub.add_parser("list", help="the checkpoints on this machine")
    listing.add_argument("--json", action="store_true", help="one JSON object per checkpoint")


def run_cli(args: argparse.Namespace) -> int:
    from acesteps.settings import load_settings
    from generator.settings import GeneratorSettings

    settings = load_settings(GeneratorSettings)
    if args.action == "pull":
        return _pull(settings, args)
    rows = present(settings)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(_table(rows))
    return 0


def _pull(settings: Any, args: argparse.Namespace) -> int:
    from generator import hub
    from generator.digest import weights_digest
    from generator.errors import ModelUnavailable

    repo_id, revision = args.name, args.revision
    served = settings.served().models.get(args.name)
    if served is not None and served.spec is not None:
        repo_id, revision = served.spec.source, revision or served.spec.revision
        if repo_id == "auto":
            from generator.settings import DEFAULT_MODEL_ID

            repo_id = DEFAULT_MODEL_ID
    if "/" not in repo_id or repo_id.startswith(("/", ".", "~")):
        print(
            f"error: {args.name!r} is neither a hub id (org/name) nor a served model whose "
            "source is one",
            file=sys.stderr,
        )
        return 2
    dest = (
        Path(args.local_dir)
        if args.local_dir
        else hub.pulled_dir(settings.models_dir, repo_id, revision)
    )
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        print(
            "error: pulling needs the generator's packages: pip install 'acesteps[gen]'",
            file=sys.stderr,
        )
        return 1
    try:
        path = hub.pull(repo_id, dest, revision=revision)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    digest = weights_digest(path, _digest_cache())
    print(json.dumps({"repo": repo_id, "path": str(path), "weightsDigest": digest}))
    where = str(path) if args.local_dir else repo_id
    print(
        f'to serve it: ACESTEPS_GENERATOR_MODEL={where}, or "source": "{where}" in '
        f'ACESTEPS_MODELS (pin it with "digest": "{digest}")',
        file=sys.stderr,
    )
    return 0


def _digest_cache() -> Path:
    from acesteps.settings import CACHE_DIR

    return CACHE_DIR / "models" / "digests.json"  # the generator's own (generator.model)


def present(settings: Any) -> list[dict[str, Any]]:
    """The served models and the other pulled checkpoints, as found on this machine."""
    from generator import hub
    from generator.settings import AUTO_MODEL, DEFAULT_MODEL_ID, TINY_MODEL

    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    catalog = settings.served()
    for name, served in catalog.models.items():
        spec = served.spec
        source, revision = spec.source, spec.revision
        path: Path | None
        missing = f"acesteps models pull {name}"
        if source == TINY_MODEL:
            path, missing = settings.generator_tiny_dir, "built on first use"
        elif source == AUTO_MODEL:  # what it loads now: the default hub id if here, else tiny
            path = hub.local_copy(settings.models_dir, DEFAULT_MODEL_ID)
            path = path or settings.generator_tiny_dir
        elif source.startswith(("/", ".", "~")) or Path(source).expanduser().is_dir():
            path, missing = Path(source).expanduser(), f"no checkpoint in {source}"
        else:
            path = hub.local_copy(settings.models_dir, source, revision)
        row = _row(path, name=name, source=source, default=name == catalog.default)
        if row.get("variant") is None:
            row["variant"] = served.variant
        if not row["present"]:
            row["missing"] = missing
        rows.append(row)
        if row["present"]:
            seen.add(Path(row["path"]).resolve())
    if settings.models_dir.is_dir():
        for path in sorted(settings.models_dir.iterdir()):
            record = hub.pulled_record(path)
            if record is None or path.resolve() in seen:
                continue
            rows.append(_row(path, name=None, source=record["repo_id"], default=False))
    return rows


def _row(path: Path | None, *, name: str | None, source: str, default: bool) -> dict[str, Any]:
    from generator import hub
    from generator.digest import weights_digest

    found = hub.describe_local(path) if path is not None else None
    row: dict[str, Any] = {
        "name": name,
        "default": default,
        "source": source,
        "present": found is not None,
        "variant": found.variant if found else None,
        "sizeBytes": found.size_bytes if found else None,
        "weightsDigest": weights_digest(found.path, _digest_cache()) if found else None,
        "path": str(found.path) if found else None,
    }
    if found and found.repo_id:
        row["pulledFrom"] = f"{found.repo_id}@{found.commit}"
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    from generator.hub import human

    lines = [f"{'NAME':<18} {'VARIANT':<8} {'SIZE':>9}  {'WEIGHTS DIGEST':<71}  WHERE"]
    for row in rows:
        name = (row["name"] or "-") + (" *" if row["default"] else "")
        size = human(row["sizeBytes"]) if row["sizeBytes"] is not None else "-"
        digest = row["weightsDigest"] or "-"
        where = row["path"] or f"not here ({row.get('missing')})"
        if row["name"] is None:
            where += f"  [pulled, not served: {row['source']}]"
        lines.append(f"{name:<18} {row['variant'] or '-':<8} {size:>9}  {digest:<71}  {where}")
    lines.append("* the default model")
    return "\n".join(lines)
