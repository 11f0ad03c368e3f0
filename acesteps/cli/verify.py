"""``acesteps verify``: its arguments, the verdict for a person, the exit code.

MATCH 0, MISMATCH 1, CANNOT VERIFY 2, NOT REGISTERED 3: the words and codes of
`acesteps.verify` (the verification page says the same words). The check itself is
`acesteps.verify`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import aiohttp

from acesteps.bytesources import ByteSource, FileSource, GatewaySource, KuboSource
from acesteps.chain import connect
from acesteps.ipfs.kubo import KuboClient
from acesteps.registry import Registry
from acesteps.settings import ChainSettings, ConfigError, load_settings
from acesteps.verify import (
    DEFAULT_MAX_BYTES,
    HEADLINE,
    Status,
    Verdict,
    malformed,
    parse_target,
    verify,
)

__all__ = ["add_arguments", "render", "run_cli"]


def render(v: Verdict) -> str:
    """The verdict for a person: a headline, then both sides, one value per line."""
    lines = [f"{HEADLINE[v.status]}: {v.reason}", ""]

    def row(label: str, value: object) -> None:
        if value is not None:
            lines.append(f"  {label:<14}{value}")

    row("target", v.target if v.target and v.target != v.request_id else None)
    row("request id", v.request_id)
    if v.also_registered_as:
        row("same CID in", ", ".join(v.also_registered_as))
    row("contract", f"{v.contract} on chain {v.chain_id}" if v.chain_id else v.contract)
    if v.parent_id is not None:
        row("variation", f"{v.variation} of request {v.parent_id} ({v.lineage})")
    if v.edit_source_kind is not None:
        lines.extend(_edit_rows(v))
    if v.registered_block is not None:
        row("registered", f"block {v.registered_block}, tx {v.registered_tx}")
        if v.final is not None:
            settled = "final" if v.final else "NOT FINAL YET: a reorg may still drop it"
            row("finality", f"{v.confirmations} confirmation(s), {settled}")
    row("bytes from", v.source)
    row("size", f"{v.size} bytes" if v.size is not None else None)
    if v.onchain_audio_hash is not None or v.computed_audio_hash is not None:
        lines.append("")
        for label, on, got, same in (
            ("audioHash", v.onchain_audio_hash, v.computed_audio_hash, v.hash_matches),
            ("CID", v.onchain_cid, v.computed_cid, v.cid_matches),
        ):
            mark = "" if same is None else ("  (same)" if same else "  (DIFFERENT)")
            lines.append(f"  {label:<14}on chain  {on if on is not None else '-'}")
            lines.append(f"  {'':<14}computed  {got if got is not None else '-'}{mark}")
    if v.onchain_manifest_hash is not None or v.manifest_note:
        lines.append("")
        state = {True: "matches", False: "DIFFERENT", None: "not checked"}[v.manifest_matches]
        row("manifest", f"{v.onchain_manifest_hash} ({state})" if v.onchain_manifest_hash else None)
        row("manifest CID", v.onchain_manifest_cid)
        row("", v.manifest_note)
    if v.contract_verify is not None:
        lines.append("")
        row("contract says", f"verify(requestId, computed audioHash) = {v.contract_verify}")
    return "\n".join(lines)


def _edit_rows(v: Verdict) -> list[str]:
    """An edit's source (its registered manifest's), and what its registration says."""
    if v.edit_source_kind == "track":
        of = f"request {v.edit_source_id} (the registered manifest)"
        if v.edit_source_matches:
            said = "  (the source's registered one)"
        elif v.edit_source_onchain_audio_hash is None:
            said = "  (DIFFERENT: the source is not registered)"
        else:
            said = f"  (DIFFERENT: registered {v.edit_source_onchain_audio_hash})"
    else:
        of = f"upload {v.edit_source_cid} (the registered manifest)"
        said = "  (as uploaded: only the manifest says so)"
    return [
        f"  {'edit':<14}{v.edit_task or 'edit'} of {of}",
        f"  {'source hash':<14}{v.edit_source_audio_hash}{said}",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``acesteps verify``; the parser's ``func`` is left to the caller."""
    parser.add_argument(
        "target",
        metavar="ID",
        nargs="?",
        default="",
        help="request id (0x + 64 hex), CID or gateway URL (.../ipfs/CID); without it, --file "
        "alone is looked up by its audioHash",
    )
    parser.add_argument("--file", type=Path, help="check this local file instead of IPFS")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default: ACESTEPS_RPC_URL)")
    parser.add_argument("--contract", help="registry address (default: settings/deployment)")
    parser.add_argument(
        "--from-block", type=int, help="first block of log searches (default: deployment or 0)"
    )
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ipfs-api-url", help="Kubo RPC (default: ACESTEPS_IPFS_API_URL)")
    where.add_argument("--gateway-url", help="read the bytes from this HTTP gateway instead")


async def run_cli(args: argparse.Namespace) -> int:
    """Run ``acesteps verify``; prints the verdict and returns its exit code (0-3)."""
    settings = load_settings(ChainSettings)
    if not args.target and args.file is None:
        verdict = Verdict(
            Status.UNKNOWN, "give a request id, a CID or a gateway URL, or --file", ""
        )
        print(verdict.to_json() if args.json else render(verdict))
        return verdict.exit_code
    asked = parse_target(args.target) if args.target else None
    if args.target and asked is None:
        verdict = Verdict(Status.UNKNOWN, malformed(args.target), args.target)
        print(verdict.to_json() if args.json else render(verdict))
        return verdict.exit_code
    try:
        address = args.contract or settings.contract()
    except ConfigError as exc:
        verdict = Verdict(Status.UNKNOWN, str(exc), args.target)
        print(verdict.to_json() if args.json else render(verdict))
        return verdict.exit_code
    from_block = args.from_block
    if from_block is None:
        from_block = settings.deployment_block(address) or 0
    w3 = connect(args.rpc_url or settings.rpc_url, timeout_s=30.0)
    async with aiohttp.ClientSession() as session:
        source: ByteSource
        # A gateway URL as the target names where to read, unless another source is given.
        gateway = args.gateway_url or (asked.gateway if asked and not args.ipfs_api_url else None)
        if args.file is not None:
            source = FileSource(args.file)
        elif gateway:
            source = GatewaySource(session, gateway, settings.ipfs_timeout_s)
        else:
            url = args.ipfs_api_url or settings.ipfs_api_url
            kubo = KuboClient(url, session=session, timeout_s=settings.ipfs_timeout_s)
            source = KuboSource(kubo, url)
        try:
            verdict = await verify(
                Registry(w3, address),
                args.target,
                source,
                from_block=from_block,
                max_bytes=args.max_bytes,
                finality=settings.finality(),
            )
        finally:
            await w3.provider.disconnect()
    print(verdict.to_json() if args.json else render(verdict))
    return verdict.exit_code
