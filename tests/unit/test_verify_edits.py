"""`acesteps.verify` on an edit (`acesteps.editing`), against a fake registry and IPFS: the
verdict names the source its registered manifest records, and a source track must be
registered with the audioHash the manifest says it edited. The same check on a real chain:
tests/integration/test_verify.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from acesteps.bytesources import Unreachable
from acesteps.cli.verify import render
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.manifest import Manifest, canonical, manifest_hash
from acesteps.registry import Provenance, Registry, Track
from acesteps.verify import Status, Verdict, _source_differs, verify
from listener.api.verdicts import verdict_body, verdict_schema
from tests.factories import manifest_for
from tests.unit.test_verify_page import node

RID = "0x" + "e1" * 32
SOURCE_ID = "0x" + "50" * 32
AUDIO = b"the edited track's bytes"
SOURCE = b"the source track's bytes"
SOURCE_CID = cid_of_bytes(SOURCE)
UPLOAD_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


class _Eth:
    @property
    async def chain_id(self) -> int:
        return 31337

    async def get_code(self, address: str) -> bytes:
        return b"\x60\x80"


@dataclass
class FakeRegistry:
    """The registry reads `acesteps.verify` makes, from dicts."""

    tracks: dict[str, Track] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    address: str = "0x" + "c0" * 20

    def __post_init__(self) -> None:
        self.w3 = type("W3", (), {"eth": _Eth()})()
        self.contract = type("Contract", (), {"address": self.address})()

    async def track_of(self, request_id: str) -> Track | None:
        return self.tracks.get(request_id)

    async def provenance_of(self, request_id: str) -> Provenance | None:
        return self.provenance.get(request_id)

    async def registration(self, request_id: str, from_block: int = 0) -> None:
        return None

    async def parent_of(self, request_id: str) -> None:
        return None

    async def verify(self, request_id: str, audio_hash: bytes) -> bool:
        track = self.tracks.get(request_id)
        return track is not None and track.audio_hash == "0x" + audio_hash.hex()


@dataclass
class FakeIpfs:
    files: dict[str, bytes]

    def describe(self, cid: str) -> str:
        return f"fake IPFS ({cid})"

    async def chunks(self, cid: str) -> AsyncIterator[bytes]:
        if cid not in self.files:
            raise Unreachable(f"no {cid} here")
        yield self.files[cid]


def edit_manifest(source: dict[str, Any], task: str = "extend", **edit: float) -> Manifest:
    """The manifest of a ``task`` edit (``edit``: its options, default 10 s more after) of
    ``source`` (an `EditSource` as JSON) whose file is AUDIO."""
    plain = manifest_for(RID, AUDIO).model_dump(mode="json")
    named = "source_track" if source["kind"] == "track" else "source_upload"
    options = {
        **plain["request"]["options"],
        "task": task,
        named: source.get("request_id") or source["cid"],
        **(edit or {"extend_after": 10.0}),
    }
    plain["request"] |= {"options": options, "edit_source": source}
    return Manifest.model_validate(plain)


def published(manifest: Manifest, registry: FakeRegistry, ipfs: FakeIpfs) -> None:
    """``manifest``'s track and manifest registered and pinned, as the publisher leaves them."""
    data = canonical(manifest)
    provenance = Provenance.of(manifest_hash(data))
    registry.tracks[RID] = Track(keccak256_hex(AUDIO), cid_of_bytes(AUDIO))
    registry.provenance[RID] = provenance
    ipfs.files |= {cid_of_bytes(AUDIO): AUDIO, provenance.manifest_cid: data}


def track_source(audio_hash: str | None = None) -> dict[str, Any]:
    return {
        "kind": "track",
        "request_id": SOURCE_ID,
        "cid": SOURCE_CID,
        "audio_hash": audio_hash or keccak256_hex(SOURCE),
        "duration_s": 10.0,
    }


async def check(registry: FakeRegistry, ipfs: FakeIpfs) -> Verdict:
    return await verify(cast(Registry, registry), RID, ipfs)


async def test_an_edit_of_a_registered_track_names_it_and_matches() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    registry.tracks[SOURCE_ID] = Track(keccak256_hex(SOURCE), SOURCE_CID)
    published(edit_manifest(track_source()), registry, ipfs)

    v = await check(registry, ipfs)

    assert v.status is Status.MATCH, v.reason
    assert (v.edit_task, v.edit_source_kind, v.edit_source_id) == ("extend", "track", SOURCE_ID)
    assert v.edit_source_cid == SOURCE_CID
    assert v.edit_source_audio_hash == v.edit_source_onchain_audio_hash == keccak256_hex(SOURCE)
    assert v.edit_source_matches is True
    text = render(v)
    assert f"extend of request {SOURCE_ID} (the registered manifest)" in text
    assert f"{keccak256_hex(SOURCE)}  (the source's registered one)" in text


async def test_a_source_registered_with_other_bytes_is_a_mismatch() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    registry.tracks[SOURCE_ID] = Track(keccak256_hex(b"other bytes"), SOURCE_CID)
    manifest = edit_manifest(track_source(), "repaint", repaint_start=1.0, repaint_end=3.0)
    published(manifest, registry, ipfs)

    v = await check(registry, ipfs)

    assert v.status is Status.MISMATCH and v.exit_code == 1
    assert v.hash_matches and v.cid_matches and v.manifest_matches  # only the source differs
    assert v.edit_source_matches is False
    assert v.edit_source_onchain_audio_hash == keccak256_hex(b"other bytes")
    assert v.reason == (
        f"the bytes match, but the edit's source, request {SOURCE_ID}, is registered with "
        f"audioHash {keccak256_hex(b'other bytes')}, not the {keccak256_hex(SOURCE)} its "
        "manifest records"
    )
    assert f"(DIFFERENT: registered {keccak256_hex(b'other bytes')})" in render(v)
    assert "repaint of request" in render(v)


async def test_a_source_track_that_is_not_registered_is_a_mismatch() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    published(edit_manifest(track_source()), registry, ipfs)

    v = await check(registry, ipfs)

    assert v.status is Status.MISMATCH
    assert v.edit_source_matches is False and v.edit_source_onchain_audio_hash is None
    assert v.reason == (
        f"the bytes match, but the edit's source, request {SOURCE_ID}, is not registered on "
        "this contract"
    )
    assert "(DIFFERENT: the source is not registered)" in render(v)


async def test_a_file_that_differs_gives_both_reasons() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    published(edit_manifest(track_source()), registry, ipfs)
    ipfs.files[cid_of_bytes(AUDIO)] = b"tampered"

    v = await check(registry, ipfs)

    assert v.status is Status.MISMATCH
    assert v.reason == (
        "audioHash and CID differ from the registered ones; the edit's source, request "
        f"{SOURCE_ID}, is not registered on this contract"
    )


async def test_an_edit_of_an_upload_names_its_cid_and_checks_nothing_more() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    upload = {
        "kind": "upload",
        "cid": UPLOAD_CID,
        "audio_hash": "0x" + "77" * 32,
        "duration_s": 12.5,
    }
    published(edit_manifest(upload), registry, ipfs)

    v = await check(registry, ipfs)

    assert v.status is Status.MATCH, v.reason
    assert (v.edit_source_kind, v.edit_source_id, v.edit_source_cid) == ("upload", None, UPLOAD_CID)
    assert v.edit_source_audio_hash == "0x" + "77" * 32
    assert v.edit_source_matches is None and v.edit_source_onchain_audio_hash is None
    assert f"extend of upload {UPLOAD_CID}" in render(v)
    assert "(as uploaded: only the manifest says so)" in render(v)


async def test_a_track_that_is_no_edit_has_no_edit_fields() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    published(manifest_for(RID, AUDIO), registry, ipfs)

    v = await check(registry, ipfs)

    assert v.status is Status.MATCH, v.reason
    assert v.edit_task is v.edit_source_kind is v.edit_source_matches is None
    assert "edit" not in render(v).replace("verify(", "")


async def test_the_api_answer_carries_the_edit_in_camel_case() -> None:
    registry, ipfs = FakeRegistry(), FakeIpfs({})
    registry.tracks[SOURCE_ID] = Track(keccak256_hex(SOURCE), SOURCE_CID)
    published(edit_manifest(track_source()), registry, ipfs)

    body = verdict_body(await check(registry, ipfs))

    assert body["editTask"] == "extend" and body["editSourceKind"] == "track"
    assert body["editSourceId"] == SOURCE_ID and body["editSourceMatches"] is True
    assert body["editSourceAudioHash"] == body["editSourceOnchainAudioHash"]
    schema = verdict_schema()
    assert set(schema["required"]) <= body.keys() <= schema["properties"].keys()
    assert "editSourceMatches" in schema["required"]
    assert json.loads(json.dumps(body)) == body  # JSON-ready


def test_the_verification_page_gives_the_same_reasons() -> None:
    """web/verify/words.js says what `acesteps.verify` says of an edit's source."""
    words = Path(__file__).resolve().parents[2] / "web" / "verify" / "words.js"
    other, ours = "0x" + "bb" * 32, "0x" + "aa" * 32
    script = (
        f"import {{ REASON }} from {json.dumps(str(words))};\n"
        f"const id = {json.dumps(SOURCE_ID)};\n"
        "console.log(JSON.stringify([REASON.sourceNotRegistered(id), "
        f"REASON.sourceDiffers(id, {json.dumps(other)}, {json.dumps(ours)})]));"
    )
    reasons = node(script)
    source = Verdict(
        Status.MISMATCH, "", RID, edit_source_id=SOURCE_ID, edit_source_audio_hash=ours
    )
    assert reasons == [
        _source_differs(source),
        _source_differs(replace(source, edit_source_onchain_audio_hash=other)),
    ]
