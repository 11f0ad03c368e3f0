"""Provable generation end to end: tracks published by the real services, re-run byte for byte
by ``acesteps reproduce`` in a separate process started after the services were restarted.

One pipeline for the module (a private anvil, the shared Kafka and Kubo, the tiny checkpoint):
a 30 s track requested on chain and a 5 s one over HTTP. Then every service is restarted, and
``python -m acesteps.cli reproduce`` runs as anyone would, from the chain and IPFS only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acesteps.chain import connect
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.manifest import canonical, manifest_hash, parse_manifest
from acesteps.registry import Provenance, Registry, Track, offchain_request_id
from acesteps.settings import CommonSettings
from publisher.registrar import register
from publisher.txsender import TxSender
from publisher.txtypes import TxPolicy
from tests.integration.pipeline import (
    PUBLISHER_KEY,
    Pipeline,
    record_where,
    running_pipeline,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Published:
    pipeline: Pipeline
    stack: CommonSettings
    chain_track: dict[str, Any]
    http_track: dict[str, Any]

    def reproduce(self, *argv: str) -> tuple[int, dict[str, Any], float]:
        """``acesteps reproduce ARGV --json`` in a new process: (exit code, answer, seconds)."""
        chain = ["--rpc-url", self.pipeline.anvil.url, "--contract", self.pipeline.contract]
        ipfs = ["--ipfs-api-url", self.stack.ipfs_api_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACESTEPS_")}
        env["HF_HUB_OFFLINE"] = "1"  # an unknown model must fail at once, not after a download
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "acesteps.cli", "reproduce", *argv, *chain, *ipfs, "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        seconds = time.monotonic() - started
        try:
            answer = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"not JSON:\n{proc.stdout}\n{proc.stderr}") from None
        return proc.returncode, answer, seconds

    def manifest_bytes(self, track: dict[str, Any]) -> bytes:
        url = f"{self.pipeline.api_url}/api/generations/{track['id']}/manifest"
        with urllib.request.urlopen(url, timeout=30) as answer:
            data: bytes = answer.read()
            return data


def _submit(pipeline: Pipeline, body: dict[str, Any]) -> str:
    post = urllib.request.Request(
        f"{pipeline.api_url}/api/generate?wait=0",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=30) as answer:
        rid: str = json.load(answer)["id"]
        return rid


@pytest.fixture(scope="module")
def published(stack: CommonSettings) -> Iterator[Published]:
    with running_pipeline(stack) as pipeline:
        tx = pipeline.chain.request("a slow piano ballad, reproducible", duration=30)
        (chain_request,) = pipeline.chain.requested([tx])
        http_id = _submit(pipeline, {"prompt": "rain on a tin roof", "duration": 5, "seed": 42})

        async def completed() -> list[dict[str, Any]]:
            return [
                await record_where(pipeline, rid, lambda g: g["status"] == "completed", "done")
                for rid in (chain_request.request_id, http_id)
            ]

        tracks = asyncio.run(completed())
        # Restarted: nothing of the workers' memory survives into the reproduction.
        for name in list(pipeline.services):
            pipeline.services[name].stop()
            pipeline.start(name)
        wait_healthy(pipeline.api_url, pipeline)
        yield Published(pipeline, stack, *tracks)


def test_each_track_is_reproduced_byte_for_byte_by_another_process(
    published: Published,
) -> None:
    for track in (published.chain_track, published.http_track):
        code, answer, seconds = published.reproduce(track["id"])
        assert (code, answer["status"]) == (0, "REPRODUCED"), answer
        assert answer["got_file"] == track["audioHash"] == answer["expected_file"]
        assert answer["got_pcm"] == answer["expected_pcm"]
        took = f"{seconds:.1f} s wall, {answer['seconds']} s in the run"
        print(f"\n{track['duration']} s track reproduced: {took}")


def test_the_manifest_is_registered_served_and_describes_its_track(published: Published) -> None:
    for track in (published.chain_track, published.http_track):
        data = published.manifest_bytes(track)
        manifest = parse_manifest(data)  # canonical bytes, or this raises
        on_chain = published.pipeline.chain.registry.functions.provenanceOf(
            bytes.fromhex(track["id"][2:])
        ).call()
        assert "0x" + bytes(on_chain[0]).hex() == manifest_hash(data) == track["manifestHash"]
        assert on_chain[1] == track["manifestCid"]
        assert (manifest.request.request_id, manifest.request.source) == (
            track["id"],
            track["source"],
        )
        assert (manifest.output.file.audio_hash, manifest.output.file.cid) == (
            track["audioHash"],
            track["cid"],
        )
        print(f"\nmanifest of the {track['source']} track: {len(data)} bytes")
    http = parse_manifest(published.manifest_bytes(published.http_track))
    assert http.request.options.seed == 42 == http.job.seed


def _altered(published: Published, path: Path, part: str, **changes: Any) -> str:
    manifest = parse_manifest(published.manifest_bytes(published.http_track))
    changed = getattr(manifest, part).model_copy(update=changes)
    path.write_bytes(canonical(manifest.model_copy(update={part: changed})))
    return str(path)


def test_an_altered_manifest_is_different_or_cannot_tell(
    published: Published, tmp_path: Path
) -> None:
    seed = _altered(published, tmp_path / "seed.json", "job", seed=43)
    code, answer, _ = published.reproduce("--manifest", seed)
    assert (code, answer["status"], answer["stage"]) == (1, "DIFFERENT", "pcm"), answer
    other = _altered(published, tmp_path / "w.json", "model", weights_digest="sha256:" + "1" * 64)
    code, answer, _ = published.reproduce("--manifest", other)
    assert (code, answer["status"]) == (2, "CANNOT TELL"), answer
    assert "other weights" in answer["reason"]
    unknown = _altered(published, tmp_path / "m.json", "model", source="nobody/no-such-model")
    code, answer, _ = published.reproduce("--manifest", unknown)
    assert (code, answer["status"]) == (2, "CANNOT TELL") and "cannot load" in answer["reason"]


def test_bad_or_missing_manifests_cannot_tell_and_say_why(
    published: Published, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"kind": "something else"}')
    code, answer, _ = published.reproduce("--manifest", str(garbage))
    assert (code, answer["status"]) == (2, "CANNOT TELL")
    assert "not a generation manifest" in answer["reason"]
    # Registered by hand: a manifest hash whose bytes are pinned but are no manifest, one
    # whose bytes nobody holds, and an id never registered.
    wrong, missing = asyncio.run(_register_by_hand(published))
    code, answer, _ = published.reproduce(wrong)
    assert (code, answer["status"]) == (2, "CANNOT TELL")
    assert "not a generation manifest" in answer["reason"]
    code, answer, _ = published.reproduce(missing)
    assert (code, answer["status"]) == (2, "CANNOT TELL") and "unreachable" in answer["reason"]
    code, answer, _ = published.reproduce("0x" + "ab" * 32)
    assert (code, answer["status"]) == (2, "CANNOT TELL") and "no registered" in answer["reason"]


async def _register_by_hand(published: Published) -> tuple[str, str]:
    """Two HTTP-style registrations with made-up manifests: (one pinned but not a manifest,
    one nobody holds)."""
    w3 = connect(published.pipeline.anvil.url)
    registry = Registry(w3, published.pipeline.contract)
    sender = TxSender(w3, PUBLISHER_KEY, TxPolicy(poll_interval_s=0.05, deadline_s=30))
    pinned = os.urandom(100)  # bytes that are no manifest, stored under their keccak-256
    async with KuboClient(published.stack.ipfs_api_url) as kubo:
        await kubo.block_put(pinned)
    ids = []
    try:
        for data in (pinned, os.urandom(100)):  # the second one nobody holds
            offchain_id = keccak256_hex(os.urandom(16))
            rid = offchain_request_id(31337, registry.address, offchain_id)
            track = Track(keccak256_hex(b"audio"), cid_of_bytes(b"audio"))
            manifest = Provenance.of(keccak256_hex(data))
            await register(registry, sender, rid, track, manifest, 1, offchain_id=offchain_id)
            ids.append(rid)
    finally:
        await w3.provider.disconnect()
    return ids[0], ids[1]
