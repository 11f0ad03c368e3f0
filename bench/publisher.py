"""Publisher throughput, and where a track's time goes, as one JSON object.

    .cache/venv/bin/python bench/publisher.py [--tracks 50 --track-bytes 1200000]

Needs the local Kafka of ``scripts/stack up`` (``ACESTEPS_KAFKA_BOOTSTRAP``). anvil (instant
mining) and Kubo are private to the run (free loopback ports, a temporary IPFS repository),
so the shared stack's chain and repository are left alone; ``--ipfs-api-url`` uses an
existing Kubo instead. Each track is ``--track-bytes`` of random bytes (1.2 MB: a 30 s MP3 at
320 kbps, three 512 KiB chunks), written to ``PREFIX.audio.v1`` as a generator writes it:
chunks and AudioReady in one Kafka transaction, keyed by the request id.

1. Steps, in process, on their own topics and registry: for each track, timed one after
   the other, the steps `publisher.handlers.handle_audio` performs: the chunk lookup
   (`ChunkReader.chunks_before`, Kafka), reassembly with keccak256 + CID
   (`publisher.chunks.assemble`), ``KuboClient.add`` (pinned), and
   `publisher.registrar.register` (``trackOf`` read, estimate, sign, send, receipt).
   Confirmations are 1: with instant mining that is "mined", nothing more is awaited.
   (``confirmations=0`` is refused by `TxSender.send`.)
2. End to end: ``python -m publisher`` as a real process on fresh topics, a fresh registry
   and fresh tracks, all written before it starts; the rate comes from the Kafka
   timestamps of the first and last ``TrackPublished`` (read_committed), so start-up and
   the consumer group join are left out; ``wall_s`` includes them.
3. Hashing: `bench/hashing.py`'s keccak256 (one-shot and streamed in 512 KiB pieces) and CID
   throughput on a ``--hash-mb`` buffer, in this run, against the reassembly step's
   throughput: how much of that step is hashing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from eth_account import Account

from acesteps.chain import connect, deploy_registry
from acesteps.dev.devchain import dev_key
from acesteps.dev.localstack import StackSettings
from acesteps.hashing import keccak256, keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.admin import delete_topics, ensure_topics
from acesteps.kafka.producer import send_record, transactional_producer
from acesteps.kafka.records import InRecord, OutRecord
from acesteps.messages import MAX_CHUNK_BYTES, AudioChunk, AudioReady, TrackPublished, decode
from acesteps.registry import Registry, offchain_request_id
from acesteps.registry import Track as Registered
from acesteps.settings import CommonSettings
from acesteps.topics import Topics
from bench.hashing import _best_seconds, _keccak_streamed
from publisher.chunks import ChunkReader, assemble
from publisher.manifests import pin_manifest
from publisher.provider import connect_for_sending
from publisher.registrar import register
from publisher.txsender import TxSender
from publisher.txtypes import TxPolicy
from tests.factories import manifest_for
from tests.integration.anvil import Anvil
from tests.integration.kafkaread import read_all
from tests.integration.kubo import Kubo
from tests.integration.services import ServiceProcess

PUBLISHER_KEY = dev_key(1)
PUBLISHER = Account.from_key(PUBLISHER_KEY).address
CONFIRMATIONS = 1
E2E_TIMEOUT_S = 600
MB = 10**6


@dataclass(frozen=True)
class Track:
    request_id: str
    data: bytes
    chunks: list[AudioChunk]
    ready: AudioReady


def make_track(size: int, contract: str) -> Track:
    """An HTTP request's track for the registry at ``contract``: fresh random bytes."""
    offchain_id = "0x" + os.urandom(32).hex()
    rid = offchain_request_id(31337, contract, offchain_id)
    data = os.urandom(size)
    chunks = AudioChunk.split(rid, data)
    ready = AudioReady(
        request_id=rid,
        audio_hash=keccak256_hex(data),
        cid=cid_of_bytes(data),
        size_bytes=len(data),
        chunks=len(chunks),
        format="mp3",
        sample_rate=44100,
        channels=2,
        duration_s=30,
        seed=1,
        model_id="bench",
        source="http",
        offchain_id=offchain_id,
        manifest=manifest_for(rid, data, offchain_id=offchain_id),
    )
    return Track(rid, data, chunks, ready)


async def write_tracks(bootstrap: str, topics: Topics, tracks: list[Track]) -> list[InRecord]:
    """Each track in one transaction, as a generator writes it; the AudioReady records."""
    producer: AIOKafkaProducer = transactional_producer(bootstrap, f"{topics.prefix}.bench-gen")
    await producer.start()
    readies = []
    try:
        for track in tracks:
            outs = [OutRecord.chunk(topics.audio, c) for c in track.chunks]
            outs.append(OutRecord.message(topics.audio, track.request_id, track.ready))
            await producer.begin_transaction()
            futures = [await send_record(producer, out) for out in outs]
            metas = await asyncio.gather(*futures)
            await producer.commit_transaction()
            last, out = metas[-1], outs[-1]
            readies.append(
                InRecord(topics.audio, last.partition, last.offset, out.key, out.value, out.headers)
            )
    finally:
        await producer.stop()
    return readies


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    cuts = statistics.quantiles(ms, n=10, method="inclusive")
    return {
        "mean_ms": round(statistics.fmean(ms), 2),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(cuts[8], 2),
        "max_ms": round(max(ms), 2),
    }


async def bench_steps(
    base: CommonSettings, anvil: Anvil, ipfs_api_url: str, count: int, size: int
) -> dict[str, Any]:
    """Phase 1: the handler's steps, one track after the other, each timed."""
    topics = Topics(f"bench{uuid.uuid4().hex[:10]}")
    await ensure_topics(base.kafka_bootstrap, topics.specs())
    w3 = connect_for_sending(anvil.url)
    deployment = await deploy_registry(w3, dev_key(0), PUBLISHER)
    registry = Registry(w3, deployment.address)
    tracks = [make_track(size, deployment.address) for _ in range(count)]
    readies = await write_tracks(base.kafka_bootstrap, topics, tracks)
    sender = TxSender(w3, PUBLISHER_KEY, TxPolicy())
    reader = ChunkReader(base.kafka_bootstrap)
    await reader.start()
    steps: list[tuple[float, float, float, float]] = []
    try:
        async with KuboClient(ipfs_api_url) as kubo:
            for track, ready in zip(tracks, readies, strict=True):
                rid, claims = track.request_id, track.ready
                start = time.perf_counter()
                chunks = await reader.chunks_before(ready, rid, claims.chunks)
                lookup_done = time.perf_counter()
                data = assemble(chunks, claims)
                assembled = time.perf_counter()
                added = await kubo.add(data, pin=True)
                provenance = await pin_manifest(kubo, claims)
                pinned = time.perf_counter()
                reg = await register(
                    registry,
                    sender,
                    rid,
                    Registered(claims.audio_hash, added.cid),
                    provenance,
                    CONFIRMATIONS,
                    offchain_id=claims.offchain_id,
                )
                registered = time.perf_counter()
                assert added.cid == claims.cid
                assert not reg.already
                steps.append(
                    (
                        lookup_done - start,
                        assembled - lookup_done,
                        pinned - assembled,
                        registered - pinned,
                    )
                )
    finally:
        await reader.stop()
        await w3.provider.disconnect()
    names = ("chunk_lookup", "assemble", "kubo_add", "register_tx")
    times = {name: [step[i] for step in steps] for i, name in enumerate(names)}
    means = {name: statistics.fmean(values) for name, values in times.items()}
    total = sum(means.values())
    return {
        "topics_prefix": topics.prefix,
        "steps": {name: _summary(values) for name, values in times.items()},
        "share_of_steps": {name: round(mean / total, 3) for name, mean in means.items()},
        "sum_of_step_means_ms": round(total * 1000, 2),
        "sum_of_step_medians_ms": round(
            sum(statistics.median(values) for values in times.values()) * 1000, 2
        ),
        "sequential_tracks_per_s": round(1 / total, 2),
        "assemble_mb_per_s": round(tracks[0].ready.size_bytes / MB / means["assemble"], 1),
    }


async def bench_service(
    base: CommonSettings, anvil: Anvil, kubo: tuple[str, str], count: int, size: int, tmp: Path
) -> dict[str, Any]:
    """Phase 2: ``python -m publisher`` over tracks written before it starts."""
    topics = Topics(f"bench{uuid.uuid4().hex[:10]}")
    await ensure_topics(base.kafka_bootstrap, topics.specs())
    w3 = connect(anvil.url)
    try:
        deployment = await deploy_registry(w3, dev_key(0), PUBLISHER)
    finally:
        await w3.provider.disconnect()
    tracks = [make_track(size, deployment.address) for _ in range(count)]
    await write_tracks(base.kafka_bootstrap, topics, tracks)
    env = {
        "ACESTEPS_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
        "ACESTEPS_TOPIC_PREFIX": topics.prefix,
        "ACESTEPS_RPC_URL": anvil.url,
        "ACESTEPS_CONTRACT_ADDRESS": deployment.address,
        "ACESTEPS_DEPLOYMENT_FILE": str(tmp / "no-deployment.json"),
        "ACESTEPS_PRIVATE_KEY": PUBLISHER_KEY,
        "ACESTEPS_IPFS_API_URL": kubo[0],
        "ACESTEPS_IPFS_GATEWAY_URL": kubo[1],
        "ACESTEPS_PUBLISHER_INSTANCE_ID": f"{topics.prefix}-bench",
        "ACESTEPS_PUBLISHER_CONFIRMATIONS": str(CONFIRMATIONS),
        "ACESTEPS_LOG_LEVEL": "WARNING",
    }
    log = StackSettings().log_dir / f"publisher-{topics.prefix}.log"
    proc = ServiceProcess("publisher", env, log)
    started = time.monotonic()
    proc.start()
    try:
        deadline = started + E2E_TIMEOUT_S
        records: list[Any] = []
        while len(records) < len(tracks):
            if not proc.alive():
                raise RuntimeError(f"the publisher exited:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(records)}/{len(tracks)} published in time")
            await asyncio.sleep(0.5)
            records = await read_all(base.kafka_bootstrap, topics.tracks)
        wall = time.monotonic() - started
    finally:
        proc.stop()
    published = {decode(TrackPublished, r.value).request_id for r in records}
    assert published == {t.request_id for t in tracks} and len(records) == len(tracks)
    stamps = sorted(r.timestamp for r in records)  # ms, set by the publisher's producer
    span_s = (stamps[-1] - stamps[0]) / 1000
    return {
        "topics_prefix": topics.prefix,
        "tracks_per_s": round((len(tracks) - 1) / span_s, 2) if span_s else None,
        "ms_per_track": round(span_s * 1000 / (len(tracks) - 1), 1),
        "wall_s_including_startup": round(wall, 2),
        "tracks_per_s_including_startup": round(len(tracks) / wall, 2),
    }


def bench_hashing(size_mb: int, runs: int, assemble_mb_per_s: float) -> dict[str, Any]:
    """Phase 3: bench/hashing.py's measurements, in this run, against the reassembly step."""
    data = os.urandom(size_mb * MB)
    view = memoryview(data)
    cases: dict[str, Callable[[], object]] = {
        "keccak256": lambda: keccak256(data),
        "keccak256_streamed_512KiB": lambda: _keccak_streamed(view),
        "cid_v1_raw_balanced": lambda: cid_of_bytes(data),
    }
    rates = {name: round(len(data) / MB / _best_seconds(fn, runs), 1) for name, fn in cases.items()}
    # assemble() streams each chunk through keccak256 and the CID builder, then joins them:
    # if hashing were all of it, its rate would be the harmonic sum of the two.
    hashing_only = 1 / (1 / rates["keccak256_streamed_512KiB"] + 1 / rates["cid_v1_raw_balanced"])
    return {
        "buffer_mb": size_mb,
        "runs": runs,
        "mb_per_s": rates,
        "keccak_plus_cid_mb_per_s": round(hashing_only, 1),
        "assemble_mb_per_s": assemble_mb_per_s,
        "hashing_share_of_assemble": round(assemble_mb_per_s / hashing_only, 3),
    }


@contextlib.asynccontextmanager
async def private_kubo(url: str | None, tmp: Path) -> AsyncIterator[tuple[str, str]]:
    if url:
        yield url, CommonSettings().ipfs_gateway_url
        return
    node = Kubo(tmp / "ipfs", StackSettings().log_dir).start()
    try:
        yield node.api_url, node.gateway_url
    finally:
        node.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = CommonSettings()
    prefixes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-publisher-") as tmp_name:
        tmp = Path(tmp_name)
        anvil = Anvil(StackSettings().log_dir).start()
        try:
            async with private_kubo(args.ipfs_api_url, tmp) as kubo:
                steps = await bench_steps(base, anvil, kubo[0], args.tracks, args.track_bytes)
                prefixes.append(steps.pop("topics_prefix"))
                service = await bench_service(base, anvil, kubo, args.tracks, args.track_bytes, tmp)
                prefixes.append(service.pop("topics_prefix"))
        finally:
            anvil.stop()
            with contextlib.suppress(Exception):
                await delete_topics(base.kafka_bootstrap, prefixes)
    hashing = bench_hashing(args.hash_mb, args.hash_runs, steps["assemble_mb_per_s"])
    per_track_steps_ms = steps["sum_of_step_means_ms"]
    return {
        "bench": "publisher",
        "tracks": args.tracks,
        "track_bytes": args.track_bytes,
        "chunks_per_track": math.ceil(args.track_bytes / MAX_CHUNK_BYTES),
        "confirmations": CONFIRMATIONS,
        "chain": "private anvil, instant mining",
        "ipfs": args.ipfs_api_url or "private Kubo (offline, test profile)",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "steps_in_process": steps,
        "end_to_end_service": service,
        # What the service spends per track beyond the four steps: the Kafka transaction
        # (offsets + TrackPublished + commit), fetching the records, the loop.
        "service_overhead_ms_per_track": round(service["ms_per_track"] - per_track_steps_ms, 1),
        "hashing": hashing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="publisher throughput and its time split")
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--track-bytes", type=int, default=1_200_000)
    parser.add_argument("--hash-mb", type=int, default=50)
    parser.add_argument("--hash-runs", type=int, default=3)
    parser.add_argument("--ipfs-api-url", help="use this Kubo instead of a private one")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
