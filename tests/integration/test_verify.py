"""``acesteps verify`` end to end: the real Kubo (RPC and gateway) and a registry deployed on
a private anvil, driven through `run_cli` with parsed arguments as a user would run it.

Each test adds fresh random bytes to Kubo, so CIDs never collide with other tests'.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils.crypto import keccak

from acesteps.chain import connect, deploy_registry
from acesteps.cli.verify import add_arguments, render, run_cli
from acesteps.dev.devchain import dev_key
from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.ipfs.unixfs import CHUNK_SIZE, cid_of_bytes
from acesteps.manifest import Manifest, canonical, manifest_hash
from acesteps.registry import Provenance, Registry, Track, offchain_request_id
from acesteps.settings import CommonSettings
from acesteps.verify import Status
from publisher.registrar import register
from publisher.txsender import TxSender
from publisher.txtypes import TxPolicy
from tests.factories import manifest_for
from tests.integration.anvil import Anvil, free_port


@dataclass
class Env:
    anvil: Anvil
    reg: Registry
    sender: TxSender
    kubo: KuboClient
    stack: CommonSettings
    tmp: Path
    capsys: pytest.CaptureFixture[str]

    async def publish(
        self, data: bytes, audio_hash: str | None = None, edit_of: EditSource | None = None
    ) -> tuple[str, str]:
        """Pin ``data`` and register it (or ``audio_hash``) as a new HTTP request (an extension
        of ``edit_of``, when given): (id, CID)."""
        cid = (await self.kubo.add(data)).cid
        rid = await self.register(audio_hash or keccak256_hex(data), cid, edit_of)
        return rid, cid

    async def register(self, audio_hash: str, cid: str, edit_of: EditSource | None = None) -> str:
        """Register (audio_hash, cid) as a new HTTP request's track; its request id."""
        offchain_id = "0x" + keccak(os.urandom(16)).hex()
        rid = offchain_request_id(31337, self.reg.address, offchain_id)
        # Its generation manifest, pinned and registered with it.
        manifest = manifest_for(rid, offchain_id=offchain_id, audio_hash=audio_hash, cid=cid)
        if edit_of is not None:
            manifest = extension(manifest, edit_of)
        data = canonical(manifest)
        manifest = Provenance(manifest_hash(data), await self.kubo.block_put(data))
        track = Track(audio_hash, cid)
        await register(self.reg, self.sender, rid, track, manifest, 1, offchain_id=offchain_id)
        return rid

    async def cli(self, *argv: str, source: str = "api") -> tuple[int, str]:
        """Run ``acesteps verify ARGV`` against this chain; (exit code, stdout)."""
        parser = argparse.ArgumentParser(prog="acesteps verify")
        add_arguments(parser)
        where = {
            "api": ["--ipfs-api-url", self.stack.ipfs_api_url],
            "gateway": ["--gateway-url", self.stack.ipfs_gateway_url],
            "none": [],
        }[source]
        chain = ["--rpc-url", self.anvil.url, "--contract", str(self.reg.address)]
        code = await run_cli(parser.parse_args([*argv, *chain, *where]))
        return code, self.capsys.readouterr().out


@pytest.fixture
async def env(
    stack: CommonSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Env]:
    node = Anvil(tmp_path).start()
    w3 = connect(node.url)
    try:
        deployment = await deploy_registry(w3, dev_key(0), Account.from_key(dev_key(1)).address)
        sender = TxSender(w3, dev_key(1), TxPolicy(poll_interval_s=0.02, deadline_s=30))
        async with KuboClient(stack.ipfs_api_url) as kubo:
            yield Env(node, Registry(w3, deployment.address), sender, kubo, stack, tmp_path, capsys)
    finally:
        await w3.provider.disconnect()
        node.stop()


def extension(manifest: Manifest, source: EditSource) -> Manifest:
    """``manifest`` as that of an extension (10 s after) of ``source``."""
    plain = manifest.model_dump(mode="json")
    named = {"source_track": source.request_id} if source.request_id else {}
    named = named or {"source_upload": source.cid}
    plain["request"]["options"] |= {"task": "extend", "extend_after": 10.0, **named}
    plain["request"]["edit_source"] = source.model_dump(mode="json")
    return Manifest.model_validate(plain)


def track(size: int = 3 * CHUNK_SIZE + 123) -> bytes:
    """Random bytes spanning several chunks, so the CID is a real DAG, not one block."""
    return os.urandom(size)


@pytest.mark.parametrize("source", ["api", "gateway"])
async def test_a_registered_track_matches(env: Env, source: str) -> None:
    data = track()
    rid, cid = await env.publish(data)

    code, out = await env.cli(rid, source=source)

    assert code == 0, out
    assert out.startswith("MATCH: ")
    # Both sides are shown: the on-chain value and the one computed from the bytes.
    assert out.count(keccak256_hex(data)) == 2 and out.count(cid) >= 2
    assert f"{len(data)} bytes" in out
    assert ("Kubo RPC" if source == "api" else "gateway") in out
    assert "verify(requestId, computed audioHash) = True" in out


async def test_json_output_has_both_sides(env: Env) -> None:
    data = track()
    rid, cid = await env.publish(data)
    code, out = await env.cli(rid, "--json")
    verdict = json.loads(out)
    assert code == verdict["exit_code"] == 0
    assert verdict["status"] == "MATCH"
    assert verdict["onchain_audio_hash"] == verdict["computed_audio_hash"] == keccak256_hex(data)
    assert verdict["onchain_cid"] == verdict["computed_cid"] == cid
    assert verdict["size"] == len(data) and verdict["request_id"] == rid
    receipt_block = verdict["registered_block"]
    assert isinstance(receipt_block, int) and verdict["registered_tx"].startswith("0x")


async def test_a_local_file_is_checked_against_the_record(env: Env) -> None:
    data = track()
    rid, cid = await env.publish(data)
    good, bad = env.tmp / "track.mp3", env.tmp / "tampered.mp3"
    good.write_bytes(data)
    bad.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])

    code, out = await env.cli(rid, "--file", str(good), source="none")
    assert code == 0 and out.startswith("MATCH: ") and f"file {good}" in out

    code, out = await env.cli(rid, "--file", str(bad), source="none")
    assert code == 1, out
    assert out.startswith("MISMATCH: audioHash and CID differ")
    assert out.count("(DIFFERENT)") == 2
    assert keccak256_hex(data) in out and keccak256_hex(bad.read_bytes()) in out
    assert cid in out and cid_of_bytes(bad.read_bytes()) in out
    assert "= False" in out


async def test_a_wrong_registered_hash_is_a_mismatch(env: Env) -> None:
    data = track()
    wrong = keccak256_hex(b"not these bytes")
    rid, cid = await env.publish(data, audio_hash=wrong)

    code, out = await env.cli(rid, "--json")

    verdict = json.loads(out)
    assert code == 1 and verdict["status"] == "MISMATCH"
    assert (verdict["hash_matches"], verdict["cid_matches"]) == (False, True)
    assert verdict["onchain_audio_hash"] == wrong
    assert verdict["onchain_cid"] == verdict["computed_cid"] == cid
    assert verdict["computed_audio_hash"] == keccak256_hex(data)
    assert verdict["contract_verify"] is False
    assert "audioHash differ" in render_from_json(out)


def render_from_json(out: str) -> str:
    """The text form of a JSON verdict (checks that both forms agree)."""
    from acesteps.verify import Verdict

    body: dict[str, Any] = json.loads(out)
    for extra in ("exit_code", "hash_matches", "cid_matches"):
        body.pop(extra)
    body["status"] = Status(body["status"])
    body["also_registered_as"] = tuple(body["also_registered_as"])
    return render(Verdict(**body))


async def test_an_unregistered_id_is_not_registered(env: Env) -> None:
    rid = "0x" + keccak(os.urandom(16)).hex()
    code, out = await env.cli(rid)
    assert code == 3
    assert out.startswith(f"NOT REGISTERED: request {rid} is not registered on this contract")
    code, out = await env.cli(rid, "--json")
    assert json.loads(out)["status"] == "NOT_REGISTERED" and code == 3


@pytest.mark.parametrize("target", ["0x1234", "not a cid", "https://example.org/track.mp3"])
async def test_a_malformed_target_says_so(env: Env, target: str) -> None:
    code, out = await env.cli(target)
    assert code == 2
    assert out.startswith(
        f"CANNOT VERIFY: '{target}' is neither a request id (0x + 64 hex), a CID nor a gateway URL"
    )


async def test_a_file_alone_is_looked_up_by_its_audio_hash(env: Env) -> None:
    data = track()
    rid, cid = await env.publish(data)
    good, bad = env.tmp / "track.mp3", env.tmp / "tampered.mp3"
    good.write_bytes(data)
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    code, out = await env.cli("--file", str(good), "--json", source="none")
    verdict = json.loads(out)
    assert code == 0 and verdict["status"] == "MATCH", out
    assert verdict["request_id"] == rid and verdict["computed_cid"] == cid
    assert verdict["contract_verify"] is True

    # Tampered: no registration has these bytes (against its request id, it is a MISMATCH).
    code, out = await env.cli("--file", str(bad), source="none")
    assert code == 3, out
    assert out.startswith(
        f"NOT REGISTERED: no request is registered with audioHash {keccak256_hex(bad.read_bytes())}"
        " (requestOfAudio)"
    )
    assert cid_of_bytes(bad.read_bytes()) in out  # what was computed is shown
    code, out = await env.cli(rid, "--file", str(bad), source="none")
    assert code == 1 and out.startswith("MISMATCH: ")


async def test_without_the_view_a_file_alone_is_found_by_a_log_scan(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment whose ABI has no ``requestOfAudio``: the TrackRegistered logs are scanned."""
    monkeypatch.setattr("acesteps.verify.has_function", lambda name: False)
    data = track(4000)
    rid, _ = await env.publish(data)
    await env.publish(track(4000))  # another registration the scan must skip
    path = env.tmp / "track.wav"
    path.write_bytes(data)

    code, out = await env.cli("--file", str(path), "--from-block", "0", "--json", source="none")
    assert code == 0 and json.loads(out)["request_id"] == rid, out
    path.write_bytes(data + b"\0")
    code, out = await env.cli("--file", str(path), "--from-block", "0", source="none")
    assert code == 3, out
    assert out.startswith("NOT REGISTERED: no TrackRegistered log with audioHash 0x")
    assert "from block 0" in out.splitlines()[0]


async def test_a_gateway_url_is_its_cid_read_from_that_gateway(env: Env) -> None:
    data = track()
    rid, cid = await env.publish(data)
    url = f"{env.stack.ipfs_gateway_url}/ipfs/{cid}"

    code, out = await env.cli(url, "--from-block", "0", "--json", source="none")

    verdict = json.loads(out)
    assert code == 0 and verdict["request_id"] == rid and verdict["target"] == url, out
    assert verdict["source"] == f"gateway {env.stack.ipfs_gateway_url}/ipfs/{cid}"


@pytest.mark.parametrize("source", ["api", "gateway"])
async def test_content_nobody_holds_cannot_be_verified(env: Env, source: str) -> None:
    """Registered, but its CID was never added to this (offline) Kubo."""
    data = track(1000)
    cid = cid_of_bytes(data)
    rid = await env.register(keccak256_hex(data), cid)

    code, out = await env.cli(rid, source=source)

    assert code == 2, out
    assert out.startswith("CANNOT VERIFY: content unreachable")
    assert keccak256_hex(data) in out and cid in out  # the on-chain side is still shown


async def test_a_cid_alone_finds_its_registration(env: Env) -> None:
    data = track()
    rid, cid = await env.publish(data)
    await env.publish(track())  # another registration the scan must skip

    code, out = await env.cli(cid, "--from-block", "0", "--json")

    verdict = json.loads(out)
    assert code == 0 and verdict["request_id"] == rid and verdict["target"] == cid
    code, out = await env.cli(cid_of_bytes(b"never registered"), "--from-block", "0")
    assert code == 3 and out.startswith("NOT REGISTERED: no TrackRegistered log with CID")


async def test_an_unreachable_chain_cannot_verify(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dead = f"http://127.0.0.1:{free_port()}"
    rid = "0x" + "ab" * 32
    args = parser.parse_args([rid, "--rpc-url", dead, "--contract", "0x" + "11" * 20])
    code = await run_cli(args)
    out = capsys.readouterr().out
    assert code == 2 and out.startswith("CANNOT VERIFY: chain unreachable")


async def test_not_a_contract_cannot_verify(env: Env) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    rid = "0x" + "ab" * 32
    args = parser.parse_args([rid, "--rpc-url", env.anvil.url, "--contract", "0x" + "11" * 20])
    assert await run_cli(args) == 2
    assert "no contract at" in env.capsys.readouterr().out


async def test_a_registration_that_is_not_final_yet_is_reported_as_such(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACESTEPS_FINALITY_DEPTH", "12")
    monkeypatch.delenv("ACESTEPS_FINALITY_TAG", raising=False)
    rid, _ = await env.publish(track(5000))

    code, out = await env.cli(rid, "--json")
    verdict = json.loads(out)
    # A match, on a registration a reorg may still drop until it is 12 blocks deep.
    assert code == 0 and verdict["status"] == "MATCH"
    assert (verdict["confirmations"], verdict["final"]) == (1, False)
    code, out = await env.cli(rid)
    assert "NOT FINAL YET" in out

    env.anvil.rpc("anvil_mine", hex(11))
    code, out = await env.cli(rid, "--json")
    verdict = json.loads(out)
    assert code == 0 and (verdict["confirmations"], verdict["final"]) == (12, True)


async def test_an_edit_names_its_source_and_its_source_is_checked(env: Env) -> None:
    source = track(5000)
    source_id, source_cid = await env.publish(source)
    of = {"kind": "track", "request_id": source_id, "cid": source_cid, "duration_s": 5.0}
    rid, _ = await env.publish(
        track(), edit_of=EditSource.model_validate({**of, "audio_hash": keccak256_hex(source)})
    )

    code, out = await env.cli(rid, "--json")

    verdict = json.loads(out)
    assert code == 0 and verdict["status"] == "MATCH", out
    assert (verdict["edit_task"], verdict["edit_source_kind"]) == ("extend", "track")
    assert verdict["edit_source_id"] == source_id and verdict["edit_source_cid"] == source_cid
    assert verdict["edit_source_audio_hash"] == keccak256_hex(source)
    assert verdict["edit_source_onchain_audio_hash"] == keccak256_hex(source)
    assert verdict["edit_source_matches"] is True
    assert f"extend of request {source_id}" in render_from_json(out)

    # A manifest that says it edited other bytes than the source's registered ones.
    other = keccak256_hex(b"other bytes")
    rid, _ = await env.publish(
        track(), edit_of=EditSource.model_validate({**of, "audio_hash": other})
    )
    code, out = await env.cli(rid)
    assert code == 1, out
    assert out.startswith(
        f"MISMATCH: the bytes match, but the edit's source, request {source_id}, is registered "
        f"with audioHash {keccak256_hex(source)}, not the {other} its manifest records"
    )
