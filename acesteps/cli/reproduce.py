"""``acesteps reproduce ID`` (or ``--manifest FILE``): re-run a published track from its
generation manifest and compare, byte for byte.

The manifest comes from the chain (``provenanceOf``, its bytes from IPFS checked against the
registered hash) or, offline, from a file. The run is `generator.reproduce`, the worker's own
code, so this command needs the generator's packages (``pip install 'acesteps[gen]'``) and the
checkpoint the manifest names. Exit codes: 0 REPRODUCED (the model's PCM and the file are
identical), 1 DIFFERENT (with the first stage that differs and what differs in the
environment), 2 CANNOT TELL (no manifest, unreachable, malformed or not the registered one,
other weights, no generator packages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from acesteps.bytesources import ByteSource, GatewaySource, KuboSource, Unreachable, read_all
from acesteps.chain import connect
from acesteps.editing import MAX_SOURCE_BYTES
from acesteps.ipfs.kubo import KuboClient
from acesteps.manifest import Manifest, parse_manifest
from acesteps.provenance import MAX_MANIFEST_BYTES, ManifestProblem, fetch_manifest
from acesteps.registry import Registry
from acesteps.settings import ChainSettings, ConfigError, load_settings
from acesteps.types import parse_request_id

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", metavar="ID", help="request id of a registered track")
    parser.add_argument("--manifest", type=Path, help="re-run this manifest file (offline)")
    parser.add_argument(
        "--model", help="the checkpoint's directory, when the manifest names a local one"
    )
    parser.add_argument(
        "--adapter",
        help="the LoRA adapter file (or its directory), when the manifest names one (its "
        "sha256 is checked)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="an edit's source file (default: fetched by the CID its manifest records; its "
        "audioHash is checked)",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default: ACESTEPS_RPC_URL)")
    parser.add_argument("--contract", help="registry address (default: settings/deployment)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ipfs-api-url", help="Kubo RPC (default: ACESTEPS_IPFS_API_URL)")
    where.add_argument("--gateway-url", help="read the manifest from this HTTP gateway instead")


def _cannot_tell(reason: str) -> dict[str, Any]:
    return {"status": "CANNOT TELL", "reason": reason, "exit_code": 2}


async def _from_chain(args: argparse.Namespace, request_id: str) -> Manifest:
    settings = load_settings(ChainSettings)
    address = args.contract or settings.contract()
    w3 = connect(args.rpc_url or settings.rpc_url)
    try:
        async with aiohttp.ClientSession() as session:
            source = _byte_source(args, session, settings)
            checked = await fetch_manifest(Registry(w3, address), request_id, source)
    finally:
        await w3.provider.disconnect()
    return checked.manifest


async def _manifest(args: argparse.Namespace) -> Manifest | dict[str, Any]:
    """The manifest to re-run, or the CANNOT TELL answer."""
    if args.manifest is not None:
        try:
            data = args.manifest.read_bytes()
            if len(data) > MAX_MANIFEST_BYTES:
                return _cannot_tell(f"{args.manifest} is larger than any manifest")
            return parse_manifest(data)
        except OSError as exc:
            return _cannot_tell(f"cannot read {args.manifest}: {exc.strerror}")
        except ValueError as exc:
            return _cannot_tell(f"{args.manifest} is not a generation manifest: {exc}")
    request_id = parse_request_id(args.id or "")
    if request_id is None:
        return _cannot_tell("give a request id (0x + 64 hex) or --manifest FILE")
    try:
        return await _from_chain(args, request_id)
    except ManifestProblem as exc:
        return _cannot_tell(str(exc))
    except ConfigError as exc:
        return _cannot_tell(str(exc))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return _cannot_tell(f"chain unreachable: {type(exc).__name__}: {exc}")


async def _source(args: argparse.Namespace, manifest: Manifest) -> bytes | None:
    """An edit's source: the file given, else its bytes by CID (None: neither; the re-run
    says CANNOT TELL)."""
    origin = manifest.request.edit_source
    if origin is None:
        return None
    if args.source is not None:
        try:
            return await asyncio.to_thread(Path(args.source).read_bytes)
        except OSError:
            return None
    try:
        settings = load_settings(ChainSettings)
        async with aiohttp.ClientSession() as session:
            source = _byte_source(args, session, settings)
            return await read_all(source, origin.cid, MAX_SOURCE_BYTES)
    except (Unreachable, ConfigError, aiohttp.ClientError, OSError, TimeoutError):
        return None


def _byte_source(
    args: argparse.Namespace, session: aiohttp.ClientSession, settings: ChainSettings
) -> ByteSource:
    """Where files are read: the gateway given, else Kubo's RPC."""
    if args.gateway_url:
        return GatewaySource(session, args.gateway_url, settings.ipfs_timeout_s)
    url = args.ipfs_api_url or settings.ipfs_api_url
    return KuboSource(KuboClient(url, session=session, timeout_s=settings.ipfs_timeout_s), url)


def _rerun(
    manifest: Manifest, model: str | None, adapter: str | None, source: bytes | None
) -> dict[str, Any]:
    try:
        from generator.reproduce import reproduce
        from generator.settings import GeneratorSettings
    except ImportError as exc:
        return _cannot_tell(
            f"re-running needs the generator's packages ({exc.name} is missing): "
            "pip install 'acesteps[gen]'"
        )
    outcome = reproduce(manifest, load_settings(GeneratorSettings), model, adapter, source)
    return {**asdict(outcome), "exit_code": outcome.exit_code}


def render(result: dict[str, Any], manifest: Manifest | None) -> str:
    lines = [f"{result['status']}: {result['reason']}"]
    if manifest is not None:
        lines += [
            "",
            f"  request       {manifest.request.request_id} ({manifest.request.source})",
            f"  model         {manifest.model.id} ({manifest.model.weights_digest})",
            *(
                [f"  adapter       {a.file} of preset {a.preset} ({a.digest}, scale {a.scale})"]
                if (a := manifest.adapter)
                else []
            ),
            f"  seed          {manifest.job.seed}",
        ]
        file = manifest.output.file
        if file.format == "mp3":  # no name: libsndfile, which made every MP3 before the field
            lines.append(f"  encoder       {file.encoder or 'libsndfile (none named)'}")
    for stage in ("pcm", "file"):
        expected, got = result.get(f"expected_{stage}"), result.get(f"got_{stage}")
        if expected is not None:
            same = "not made" if got is None else "same" if expected == got else "DIFFERENT"
            lines.append(f"  {stage:<13} manifest {expected}")
            lines.append(f"  {'':<13} here     {got or '-'}  ({same})")
    for name, pair in (result.get("environment") or {}).items():
        lines.append(f"  differs       {name}: manifest {pair['manifest']}, here {pair['here']}")
    if result.get("seconds") is not None:
        lines.append(f"  took          {result['seconds']} s")
    return "\n".join(lines)


async def run_cli(args: argparse.Namespace) -> int:
    found = await _manifest(args)
    manifest = found if isinstance(found, Manifest) else None
    if isinstance(found, Manifest):
        source = await _source(args, found)
        result = await asyncio.to_thread(_rerun, found, args.model, args.adapter, source)
    else:
        result = found
    print(json.dumps(result, indent=2) if args.json else render(result, manifest))
    code: int = result["exit_code"]
    return code
