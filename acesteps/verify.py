"""Checking a track against its registration, needing nothing of ours.

The check behind ``acesteps verify`` (`acesteps.cli.verify`) and the API's ``/verify``.

A verifier needs a JSON-RPC URL, the registry's address and a way to read IPFS (a Kubo RPC
endpoint, any HTTP gateway, or a local file): no Kafka, no database, no key. It trusts only
the chain: the bytes are hashed as they stream in (keccak256 and the CID, recomputed
locally with the publisher's fixed parameters, `acesteps.ipfs.unixfs`), so neither the
node nor the gateway that serves them has to be trusted.

Modes (``TARGET`` is a request id or a CID):

- ``REQUEST_ID``: the registered track (``trackOf``) against the bytes at its CID.
- ``REQUEST_ID --file F``: a local file against the registered track.
- ``CID``: the registration is found by scanning ``TrackRegistered`` logs, because the
  CID is not an indexed topic; the scan runs from ``--from-block`` (default: the deployment
  block when the deployment file names this contract, else 0) in bounded ranges. Acceptable
  for a verifier tool, too slow for a service on a long chain. ``CID --file F`` works too.

A verdict is MATCH (exit 0) when both the audioHash and the CID computed from the bytes
equal the registered ones, MISMATCH (exit 1) when either differs, and UNKNOWN (exit 2,
"CANNOT VERIFY") when there is nothing to compare: not registered, content or chain
unreachable. The contract's own ``verify(requestId, audioHash)`` is asked as well and
reported beside the local comparison, and so is whether the registration is final yet
(``confirmations``, ``final``): a MATCH on a registration that is not final may still be
undone by a reorg.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

import aiohttp
from web3.exceptions import ProviderConnectionError, Web3Exception

from acesteps.bytesources import ByteSource, FileSource, Unreachable
from acesteps.finality import Finality
from acesteps.hashing import Keccak256
from acesteps.ipfs.unixfs import CidBuilder
from acesteps.provenance import ManifestProblem, fetch_manifest
from acesteps.registry import Registry
from acesteps.types import parse_request_id

__all__ = [
    "Status",
    "Verdict",
    "verify",
]

DEFAULT_MAX_BYTES = 1 << 30  # a 240 s WAV is ~42 MB: anything near this is not a track
_CID = re.compile(r"^(b[a-z2-7]{20,200}|Qm[1-9A-HJ-NP-Za-km-z]{44})$")


class Status(StrEnum):
    MATCH = "MATCH"
    MISMATCH = "MISMATCH"
    UNKNOWN = "UNKNOWN"


_EXIT = {Status.MATCH: 0, Status.MISMATCH: 1, Status.UNKNOWN: 2}


@dataclass(frozen=True)
class Verdict:
    """Both sides of a check; fields not reached (say, content unreachable) stay None."""

    status: Status
    reason: str
    target: str
    request_id: str | None = None
    contract: str | None = None
    chain_id: int | None = None
    onchain_audio_hash: str | None = None
    onchain_cid: str | None = None
    computed_audio_hash: str | None = None
    computed_cid: str | None = None
    size: int | None = None
    source: str | None = None
    contract_verify: bool | None = None
    """What the contract's ``verify(requestId, computed audioHash)`` answered."""
    registered_block: int | None = None
    registered_tx: str | None = None
    confirmations: int | None = None
    """Blocks from the registration's to the head, with it."""
    final: bool | None = None
    """Whether the registration is final (`acesteps.finality`): until it is, a reorg may still
    drop it (the publisher then registers the track again)."""
    onchain_manifest_hash: str | None = None
    onchain_manifest_cid: str | None = None
    manifest_matches: bool | None = None
    """The generation manifest's bytes hash to the registered ``manifestHash`` and it describes
    this very file (None: no manifest registered, or it could not be read)."""
    manifest_note: str | None = None
    also_registered_as: tuple[str, ...] = ()
    """Other request ids registered with the same CID (CID mode)."""

    @property
    def exit_code(self) -> int:
        return _EXIT[self.status]

    @property
    def hash_matches(self) -> bool | None:
        return _same(self.onchain_audio_hash, self.computed_audio_hash)

    @property
    def cid_matches(self) -> bool | None:
        return _same(self.onchain_cid, self.computed_cid)

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready values (``acesteps verify --json``, the API's /verify)."""
        body: dict[str, Any] = asdict(self)
        body["status"] = self.status.value
        body["also_registered_as"] = list(self.also_registered_as)
        body.update(
            exit_code=self.exit_code, hash_matches=self.hash_matches, cid_matches=self.cid_matches
        )
        return body

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def _same(a: str | None, b: str | None) -> bool | None:
    return None if a is None or b is None else a == b


# ---------------------------------------------------------------------- the check


async def verify(
    registry: Registry,
    target: str,
    source: ByteSource,
    *,
    from_block: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    finality: Finality | None = None,
) -> Verdict:
    """Check ``target`` (request id or CID) against the bytes ``source`` gives; ``finality``
    says when the registration counts as final (default: `Finality`'s)."""
    base = Verdict(Status.UNKNOWN, "", target, contract=registry.address)
    try:
        return await _verify(
            registry, target, source, base, from_block, max_bytes, finality or Finality()
        )
    except (ProviderConnectionError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _with(base, reason=f"chain unreachable: {type(exc).__name__}: {exc}")
    except Web3Exception as exc:  # the node answered with an error
        return _with(base, reason=f"chain error: {type(exc).__name__}: {exc}")


async def _verify(
    registry: Registry,
    target: str,
    source: ByteSource,
    v: Verdict,
    from_block: int,
    max_bytes: int,
    finality: Finality,
) -> Verdict:
    # 1. The chain: is there a registry, and which request is meant?
    w3 = registry.w3
    v = _with(v, chain_id=await w3.eth.chain_id)
    if not await w3.eth.get_code(registry.contract.address):
        return _with(v, reason=f"no contract at {registry.address} on chain {v.chain_id}")
    rid = parse_request_id(target)
    if rid is not None:
        ids = [rid]
    elif _CID.match(target):
        ids = await registry.ids_with_cid(target, from_block)
        if not ids:
            return _with(
                v, reason=f"no TrackRegistered log with CID {target} from block {from_block}"
            )
    else:
        return _with(v, reason=f"{target!r} is neither a request id (0x + 64 hex) nor a CID")
    rid = ids[0]
    v = _with(v, request_id=rid, also_registered_as=tuple(ids[1:]))

    # 2. The registration.
    track = await registry.track_of(rid)
    if track is None:
        return _with(v, reason=f"request {rid} is not registered on this contract")
    v = _with(v, onchain_audio_hash=track.audio_hash, onchain_cid=track.cid)
    v = await _with_registration_log(v, registry, rid, from_block, finality)

    # 3. The bytes, hashed both ways as they arrive.
    v = _with(v, source=source.describe(track.cid))
    keccak, cid, size = Keccak256(), CidBuilder(), 0
    try:
        async for chunk in source.chunks(track.cid):
            size += len(chunk)
            if size > max_bytes:
                return _with(v, reason=f"content unreachable: larger than {max_bytes} bytes")
            keccak.update(chunk)
            cid.update(chunk)
    except Unreachable as exc:
        return _with(v, reason=f"content unreachable: {exc}")
    v = _with(v, computed_audio_hash=keccak.hexdigest(), computed_cid=cid.finish(), size=size)
    v = _with(v, contract_verify=await registry.verify(rid, keccak.digest()))
    v = await _with_manifest(v, registry, rid, source)

    # 4. The verdict.
    checks = (("audioHash", v.hash_matches), ("CID", v.cid_matches))
    differs = [name for name, same in checks if not same]
    manifest = "the generation manifest does not match its registration"
    if differs:
        reason = " and ".join(differs) + " differ from the registered ones"
        if v.manifest_matches is False:
            reason += f"; {manifest}"
        return _with(v, status=Status.MISMATCH, reason=reason)
    if v.manifest_matches is False:
        return _with(v, status=Status.MISMATCH, reason=f"the bytes match, but {manifest}")
    return _with(v, status=Status.MATCH, reason="audioHash and CID equal the registered ones")


async def _with_registration_log(
    v: Verdict, registry: Registry, request_id: str, from_block: int, finality: Finality
) -> Verdict:
    """Where the registration happened and whether it is final, if the node answers; the
    verdict does not need it."""
    try:
        found = await registry.registration(request_id, from_block)
        if found is None:
            return v
        confirmations = int(await registry.w3.eth.block_number) - found.block_number + 1
        final = await finality.is_final(registry.w3, found.block_number, confirmations)
    except Web3Exception:
        return v
    return _with(
        v,
        registered_block=found.block_number,
        registered_tx=found.tx_hash,
        confirmations=confirmations,
        final=final,
    )


async def _with_manifest(
    v: Verdict, registry: Registry, request_id: str, source: ByteSource
) -> Verdict:
    """The registered manifest, checked: its hash, and that it describes this file."""
    provenance = await registry.provenance_of(request_id)
    if provenance is None:
        return _with(v, manifest_note="no generation manifest is registered for this track")
    v = _with(
        v,
        onchain_manifest_hash=provenance.manifest_hash,
        onchain_manifest_cid=provenance.manifest_cid,
    )
    if isinstance(source, FileSource):  # a local audio file: IPFS is not at hand
        return _with(v, manifest_note="not checked: the bytes came from a local file")
    try:
        checked = await fetch_manifest(registry, request_id, source)
    except ManifestProblem as exc:
        if exc.kind == "unreachable":
            return _with(v, manifest_note=str(exc))
        return _with(v, manifest_matches=False, manifest_note=str(exc))
    file = checked.manifest.output.file
    if (file.audio_hash, file.cid) != (v.onchain_audio_hash, v.onchain_cid):
        note = "the manifest describes another file than the registered one"
        return _with(v, manifest_matches=False, manifest_note=note)
    return _with(v, manifest_matches=True, manifest_note="the manifest matches its registration")


def _with(v: Verdict, **changes: Any) -> Verdict:
    return replace(v, **changes)
