"""Checking a track against its registration, needing nothing of ours.

The check behind ``acesteps verify`` (`acesteps.cli.verify`) and the API's ``/verify``.

A verifier needs a JSON-RPC URL, the registry's address and a way to read IPFS (a Kubo RPC
endpoint, any HTTP gateway, or a local file): no Kafka, no database, no key. It trusts only
the chain: the bytes are hashed as they stream in (keccak256 and the CID, recomputed
locally with the publisher's fixed parameters, `acesteps.ipfs.unixfs`), so neither the
node nor the gateway that serves them has to be trusted.

Modes (``TARGET`` is a request id, a CID or a gateway URL ``.../ipfs/CID``):

- ``REQUEST_ID``: the registered track (``trackOf``) against the bytes at its CID.
- ``REQUEST_ID --file F``: a local file against the registered track.
- ``CID``: the registration is found by scanning ``TrackRegistered`` logs, because the
  CID is not an indexed topic; the scan runs from ``--from-block`` (default: the deployment
  block when the deployment file names this contract, else 0) in bounded ranges. Acceptable
  for a verifier tool, too slow for a service on a long chain. ``CID --file F`` works too.
  A gateway URL is its CID, read from that gateway unless another source is given.
- ``--file F`` alone: the file's bytes are hashed and their registration is looked up by
  audioHash: the contract's ``requestOfAudio`` view when its ABI has one (`has_function`),
  else (or on a deployment older than the view) a scan of ``TrackRegistered`` logs as above.

One vocabulary, shared with the verification page (``web/verify/words.js`` says the same
words; a test holds them equal), each with its exit code:

- MATCH (0): both the audioHash and the CID computed from the bytes equal the registered ones;
- MISMATCH (1): there is a registration, and either differs (or its manifest does not match,
  or the track is an edit of a track whose registered audioHash is not the one its manifest
  records as the source's);
- NOT REGISTERED (3, ``NOT_REGISTERED`` in JSON): the chain answered, and there is no
  registration of this request id, this CID or these bytes (from the block the search began);
- CANNOT VERIFY (2, ``UNKNOWN`` in JSON): nothing to compare: a malformed target, no contract
  at the address, content or chain unreachable.

Lineage comes with the verdict: a variation's parent (``parentOf`` on chain, or the
registered manifest), and an edit's source (`acesteps.editing`, the manifest's
``request.edit_source``; a source track is checked against its own registration).

The contract's own ``verify(requestId, audioHash)`` is asked as well and
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
from web3.exceptions import (
    BadFunctionCallOutput,
    ContractLogicError,
    ProviderConnectionError,
    Web3Exception,
)

from acesteps.bytesources import ByteSource, FileSource, Unreachable
from acesteps.editing import EditSource
from acesteps.finality import Finality
from acesteps.hashing import Keccak256
from acesteps.ipfs.unixfs import CidBuilder
from acesteps.provenance import ManifestProblem, fetch_manifest
from acesteps.registry import Registry, has_function
from acesteps.types import parse_request_id

__all__ = [
    "HEADLINE",
    "Status",
    "Target",
    "Verdict",
    "parse_target",
    "verify",
]

DEFAULT_MAX_BYTES = 1 << 30  # a 240 s WAV is ~42 MB: anything near this is not a track
_CID = re.compile(r"^(b[a-z2-7]{20,200}|Qm[1-9A-HJ-NP-Za-km-z]{44})$")


class Status(StrEnum):
    MATCH = "MATCH"
    MISMATCH = "MISMATCH"
    NOT_REGISTERED = "NOT_REGISTERED"
    UNKNOWN = "UNKNOWN"


_EXIT = {Status.MATCH: 0, Status.MISMATCH: 1, Status.UNKNOWN: 2, Status.NOT_REGISTERED: 3}
HEADLINE = {
    Status.MATCH: "MATCH",
    Status.MISMATCH: "MISMATCH",
    Status.NOT_REGISTERED: "NOT REGISTERED",
    Status.UNKNOWN: "CANNOT VERIFY",
}
"""What ``acesteps verify`` and the verification page print for each status."""
_GATEWAY_PATH = re.compile(r"^(https?://[^/?#]+(?:/[^?#]*?)?)/ipfs/([^/?#]+)")
_GATEWAY_HOST = re.compile(r"^(https?)://([^./?#]+)\.ipfs\.([^/?#]+)")


@dataclass(frozen=True)
class Target:
    """What ``TARGET`` names: a request id, or a CID (with the gateway of a gateway URL)."""

    request_id: str | None = None
    cid: str | None = None
    gateway: str | None = None
    """The gateway a URL target names (its base, without ``/ipfs/...``)."""


def parse_target(text: str) -> Target | None:
    """``text`` as a request id, a CID or a gateway URL (``BASE/ipfs/CID`` or
    ``https://CID.ipfs.HOST``); None when it is none of them (the page parses the same way)."""
    text = text.strip()
    if (rid := parse_request_id(text)) is not None:
        return Target(request_id=rid)
    if _CID.match(text):
        return Target(cid=text)
    if found := _GATEWAY_PATH.match(text):
        base, cid = found[1], found[2]
    elif found := _GATEWAY_HOST.match(text):
        base, cid = f"{found[1]}://{found[3]}", found[2]
    else:
        return None
    return Target(cid=cid, gateway=base) if _CID.match(cid) else None


def malformed(text: str) -> str:
    """The reason given for a target that `parse_target` refuses."""
    return f"'{text}' is neither a request id (0x + 64 hex), a CID nor a gateway URL"


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
    parent_id: str | None = None
    """A variation's parent request (`acesteps.variations`), and ``variation`` its index."""
    variation: int | None = None
    lineage: str | None = None
    """Who says so: ``parentOf`` on chain (chain requests), or the registered manifest."""
    edit_task: str | None = None
    """An edit (`acesteps.editing`), as its registered manifest says: repaint, extend or
    cover; ``edit_source_*``: what it edited (its manifest's ``request.edit_source``)."""
    edit_source_kind: str | None = None
    """``track`` (a track of this service) or ``upload`` (an uploaded file)."""
    edit_source_id: str | None = None
    """A track source: its request id."""
    edit_source_cid: str | None = None
    edit_source_audio_hash: str | None = None
    """The source's audioHash as the manifest records it."""
    edit_source_onchain_audio_hash: str | None = None
    """A track source: its registered audioHash (``trackOf``; None: not registered)."""
    edit_source_matches: bool | None = None
    """A track source: its registered audioHash is the manifest's (None: an upload, which
    only the manifest vouches for, or not checked)."""

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
    """Check ``target`` (request id, CID or gateway URL; empty: the bytes of ``source`` alone,
    looked up by their audioHash) against the bytes ``source`` gives; ``finality`` says when
    the registration counts as final (default: `Finality`'s)."""
    base = Verdict(Status.UNKNOWN, "", target, contract=registry.address)
    try:
        return await _verify(
            registry, target, source, base, from_block, max_bytes, finality or Finality()
        )
    except (ProviderConnectionError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _with(base, reason=f"chain unreachable: {type(exc).__name__}: {exc}")
    except Web3Exception as exc:  # the node answered with an error
        return _with(base, reason=f"chain error: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Hashed:
    audio_hash: str
    digest: bytes
    cid: str
    size: int


async def _hash(source: ByteSource, cid: str, max_bytes: int) -> _Hashed | str:
    """The bytes ``source`` gives for ``cid``, hashed both ways as they arrive; a reason
    (str) when they cannot be read."""
    keccak, builder, size = Keccak256(), CidBuilder(), 0
    try:
        async for chunk in source.chunks(cid):
            size += len(chunk)
            if size > max_bytes:
                return f"content unreachable: larger than {max_bytes} bytes"
            keccak.update(chunk)
            builder.update(chunk)
    except Unreachable as exc:
        return f"content unreachable: {exc}"
    return _Hashed(keccak.hexdigest(), keccak.digest(), builder.finish(), size)


async def _ids_with_audio(
    registry: Registry, audio_hash: str, from_block: int
) -> tuple[list[str], str]:
    """The requests registered with ``audio_hash`` (``requestOfAudio`` when the ABI has it
    and the deployment answers it, else a log scan), and the reason to give when none is."""
    if has_function("requestOfAudio"):
        try:
            found = await registry.request_of_audio(audio_hash)
        except (ContractLogicError, BadFunctionCallOutput):
            pass  # a deployment older than the view: scan instead
        else:
            none = f"no request is registered with audioHash {audio_hash} (requestOfAudio)"
            return ([found] if found else []), none
    ids = await registry.ids_with_audio_hash(audio_hash, from_block)
    return ids, f"no TrackRegistered log with audioHash {audio_hash} from block {from_block}"


async def _verify(
    registry: Registry,
    target: str,
    source: ByteSource,
    v: Verdict,
    from_block: int,
    max_bytes: int,
    finality: Finality,
) -> Verdict:
    # 0. What is asked: a request id, a CID, or (no target) the bytes alone.
    asked = parse_target(target) if target.strip() else Target()
    if asked is None:
        return _with(v, reason=malformed(target))

    # 1. The chain: is there a registry, and which request is meant?
    w3 = registry.w3
    v = _with(v, chain_id=await w3.eth.chain_id)
    if not await w3.eth.get_code(registry.contract.address):
        return _with(v, reason=f"no contract at {registry.address} on chain {v.chain_id}")
    hashed: _Hashed | None = None
    if asked.request_id is not None:
        ids = [asked.request_id]
    elif asked.cid is not None:
        ids = await registry.ids_with_cid(asked.cid, from_block)
        if not ids:
            reason = f"no TrackRegistered log with CID {asked.cid} from block {from_block}"
            return _with(v, status=Status.NOT_REGISTERED, reason=reason)
    else:
        v = _with(v, source=source.describe(""))
        got = await _hash(source, "", max_bytes)
        if isinstance(got, str):
            return _with(v, reason=got)
        hashed = got
        v = _with(v, computed_audio_hash=got.audio_hash, computed_cid=got.cid, size=got.size)
        ids, none = await _ids_with_audio(registry, got.audio_hash, from_block)
        if not ids:
            return _with(v, status=Status.NOT_REGISTERED, reason=none)
    rid = ids[0]
    v = _with(v, request_id=rid, also_registered_as=tuple(ids[1:]))

    # 2. The registration.
    track = await registry.track_of(rid)
    if track is None:
        reason = f"request {rid} is not registered on this contract"
        return _with(v, status=Status.NOT_REGISTERED, reason=reason)
    v = _with(v, onchain_audio_hash=track.audio_hash, onchain_cid=track.cid)
    v = await _with_registration_log(v, registry, rid, from_block, finality)
    if (parent := await registry.parent_of(rid)) is not None:
        v = _with(v, parent_id=parent[0], variation=parent[1], lineage="parentOf on chain")

    # 3. The bytes, hashed both ways as they arrive (once: the bytes alone are hashed above).
    if hashed is None:
        v = _with(v, source=source.describe(track.cid))
        got = await _hash(source, track.cid, max_bytes)
        if isinstance(got, str):
            return _with(v, reason=got)
        hashed = got
    v = _with(v, computed_audio_hash=hashed.audio_hash, computed_cid=hashed.cid, size=hashed.size)
    v = _with(v, contract_verify=await registry.verify(rid, hashed.digest))
    v = await _with_manifest(v, registry, rid, source)

    # 4. The verdict.
    checks = (("audioHash", v.hash_matches), ("CID", v.cid_matches))
    differs = [name for name, same in checks if not same]
    manifest = "the generation manifest does not match its registration"
    if differs:
        reason = " and ".join(differs) + " differ from the registered ones"
        if v.manifest_matches is False:
            reason += f"; {manifest}"
        if v.edit_source_matches is False:
            reason += f"; {_source_differs(v)}"
        return _with(v, status=Status.MISMATCH, reason=reason)
    if v.manifest_matches is False:
        return _with(v, status=Status.MISMATCH, reason=f"the bytes match, but {manifest}")
    if v.edit_source_matches is False:
        return _with(v, status=Status.MISMATCH, reason=f"the bytes match, but {_source_differs(v)}")
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
    file, asked = checked.manifest.output.file, checked.manifest.request
    if (file.audio_hash, file.cid) != (v.onchain_audio_hash, v.onchain_cid):
        note = "the manifest describes another file than the registered one"
        return _with(v, manifest_matches=False, manifest_note=note)
    lineage = (asked.parent_id, asked.variation)
    if v.lineage is not None and lineage != (v.parent_id, v.variation):
        note = "the manifest names another parent than parentOf on chain"
        return _with(v, manifest_matches=False, manifest_note=note)
    if v.lineage is None and asked.parent_id is not None:
        v = _with(v, parent_id=lineage[0], variation=lineage[1], lineage="the registered manifest")
    if asked.edit_source is not None:
        v = await _with_edit_source(v, registry, asked.options.task, asked.edit_source)
    return _with(v, manifest_matches=True, manifest_note="the manifest matches its registration")


async def _with_edit_source(
    v: Verdict, registry: Registry, task: str | None, source: EditSource
) -> Verdict:
    """What an edit edited, as its manifest says; a track source checked against its own
    registration (``trackOf``): the manifest's audioHash must be the registered one."""
    v = _with(
        v,
        edit_task=task,
        edit_source_kind=source.kind,
        edit_source_id=source.request_id,
        edit_source_cid=source.cid,
        edit_source_audio_hash=source.audio_hash,
    )
    if source.request_id is None:  # an upload: only the manifest vouches for its bytes
        return v
    track = await registry.track_of(source.request_id)
    onchain = track.audio_hash if track is not None else None
    return _with(
        v,
        edit_source_onchain_audio_hash=onchain,
        edit_source_matches=onchain == source.audio_hash,
    )


def _source_differs(v: Verdict) -> str:
    """Why a track source does not match the manifest's (``edit_source_matches`` False)."""
    source = f"the edit's source, request {v.edit_source_id},"
    if v.edit_source_onchain_audio_hash is None:
        return f"{source} is not registered on this contract"
    return (
        f"{source} is registered with audioHash {v.edit_source_onchain_audio_hash}, "
        f"not the {v.edit_source_audio_hash} its manifest records"
    )


def _with(v: Verdict, **changes: Any) -> Verdict:
    return replace(v, **changes)
