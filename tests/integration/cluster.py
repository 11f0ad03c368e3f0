"""The local 3-node Kafka cluster (``scripts/stack cluster``) and what the cluster tests check
on a pipeline: every request completed once, published once, registered once, verified."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from acesteps.hashing import keccak256_hex
from acesteps.messages import TYPE_HEADER
from acesteps.settings import CACHE_DIR
from acesteps.topics import Topics
from tests.integration.kafkaread import read_all
from tests.integration.pipeline import Pipeline
from tests.integration.services import ROOT

__all__ = [
    "Cluster",
    "Progress",
    "assert_each_once",
    "cluster_running",
    "submit",
    "until_final",
]

FINAL = ("completed", "failed", "revoked")
NODES = (1, 2, 3)


def stack(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "stack"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"scripts/stack {' '.join(args)}:\n{proc.stderr[-2000:]}"
    return proc.stdout


@dataclass
class Cluster:
    """The client settings `scripts/stack cluster env` prints: the documented ones only."""

    env: dict[str, str]

    def settings(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if not k.startswith("ACESTEPS_STACK_")}

    @property
    def bootstrap(self) -> str:
        return self.env["ACESTEPS_KAFKA_BOOTSTRAP"]

    def leader(self) -> int:
        """The node id of the active controller (Kafka's metadata quorum tool)."""
        return int(stack("cluster", "leader").strip())

    def kill(self, node: int) -> None:
        stack("cluster", "kill", str(node))

    def start(self, node: int) -> None:
        stack("cluster", "start", str(node))

    def heal(self) -> None:
        """Every node running (a test that failed half-way may have left one down)."""
        for node in NODES:
            self.start(node)

    def wait_new_leader(self, old: int, timeout_s: float = 120) -> tuple[int, float]:
        """The next active controller and how long the quorum took to elect it."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            try:
                leader = self.leader()
            except (AssertionError, ValueError):
                leader = old
            if leader != old:
                return leader, time.monotonic() - began
            time.sleep(0.5)
        raise AssertionError(f"no controller elected in place of node {old}")


def cluster_running() -> Iterator[Cluster]:
    """Starts the cluster unless it runs; stops it afterwards when it was started here."""
    was_up = (
        subprocess.run(
            [str(ROOT / "scripts" / "stack"), "cluster", "status"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    stack("cluster", "up")
    env = {}
    for line in (CACHE_DIR / "run" / "cluster.env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    cluster = Cluster(env)
    try:
        yield cluster
    finally:
        cluster.heal()
        if not was_up:
            stack("cluster", "down")


async def submit(pipeline: Pipeline, n: int, duration: int, what: str) -> list[str]:
    async with aiohttp.ClientSession() as http:
        ids = []
        for i in range(n):
            body = {"prompt": f"{what} {i}", "duration": duration, "seed": i}
            async with http.post(f"{pipeline.api_url}/api/generate?wait=0", json=body) as answer:
                assert answer.status == 202, await answer.text()
                ids.append((await answer.json())["id"])
        return ids


@dataclass
class Progress:
    """Where the requests are, from the API."""

    pipeline: Pipeline
    ids: list[str]

    async def records(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            found = []
            for rid in self.ids:
                async with http.get(f"{self.pipeline.api_url}/api/generations/{rid}") as answer:
                    assert answer.status in (200, 404), await answer.text()
                    found.append(await answer.json() if answer.status == 200 else {})
            return found

    async def completed(self) -> int:
        return sum(r.get("status") == "completed" for r in await self.records())

    async def until(self, completed: int, timeout_s: float) -> float:
        """Seconds until at least ``completed`` requests are; fails on a dead service."""
        began = time.monotonic()
        while await self.completed() < completed:
            for name, proc in self.pipeline.services.items():
                assert proc.alive(), f"{name} exited:\n{self.pipeline.logs()}"
            if time.monotonic() - began > timeout_s:
                raise AssertionError(
                    f"{completed} completed not reached in {timeout_s}s\n{self.pipeline.logs()}"
                )
            await asyncio.sleep(0.5)
        return time.monotonic() - began


async def until_final(progress: Progress, timeout_s: float) -> list[dict[str, Any]]:
    await progress.until(len(progress.ids), timeout_s)
    return await progress.records()


async def assert_each_once(pipeline: Pipeline, bootstrap: str, ids: list[str]) -> None:
    """0 lost, 0 duplicated, each verified: one AudioReady and one TrackPublished per request
    on the audio and tracks topics (read_committed), no failure, one TrackRegistered log per
    request on chain, and the bytes Kubo serves for its CID hash to the audioHash the contract
    holds."""
    topics = Topics(pipeline.prefix)
    for topic, kind in ((topics.audio, b"AudioReady"), (topics.tracks, b"TrackPublished")):
        seen = Counter(
            r.key.decode()
            for r in await read_all(bootstrap, topic, timeout_s=60)
            if dict(r.headers).get(TYPE_HEADER) == kind
        )
        assert set(seen) == set(ids), f"lost or foreign {kind.decode()} records"
        assert max(seen.values()) == 1, f"{kind.decode()} twice: {seen.most_common(3)}"
    assert await read_all(bootstrap, topics.failures, timeout_s=60) == []

    registry = pipeline.chain.w3.eth.contract(
        address=pipeline.contract, abi=pipeline.chain.registry_abi()
    )
    logs = registry.events.TrackRegistered().get_logs(from_block=0)
    registered = Counter("0x" + log["args"]["requestId"].hex() for log in logs)
    assert set(registered) == set(ids) and max(registered.values()) == 1, registered
    kubo = pipeline.env["ACESTEPS_IPFS_API_URL"]
    async with aiohttp.ClientSession() as http:
        for rid in ids:
            audio_hash, cid = registry.functions.trackOf(rid).call()
            async with http.post(f"{kubo}/api/v0/cat", params={"arg": cid}) as answer:
                assert answer.status == 200, await answer.text()
                data = await answer.read()
            assert keccak256_hex(data) == "0x" + audio_hash.hex(), f"{rid} does not verify"
