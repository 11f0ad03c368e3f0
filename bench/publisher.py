"""Publisher throughput, and where a track's time goes, as one JSON object.

    .cache/venv/bin/python bench/publisher.py [--tracks 50 --track-bytes 1200000]
        [--block-time 2 --block-time 12] [--batch-size 1 --batch-size 10 --batch-size 50]

Needs the local Kafka of ``scripts/stack up`` (``ACESTEPS_KAFKA_BOOTSTRAP``). anvil and Kubo
are private to the run (free loopback ports, a temporary IPFS repository), so the shared
stack's chain and repository are left alone; ``--ipfs-api-url`` uses an existing Kubo
instead. Each track is ``--track-bytes`` of random bytes (1.2 MB: a 30 s MP3 at 320 kbps,
three 512 KiB chunks), written to ``PREFIX.audio.v1`` as a generator writes it: chunks and
AudioReady in one Kafka transaction, keyed by the request id. Confirmations are 1.

1. Steps, in process, on an anvil that mines each transaction at once, for each track timed
   one after the other: the chunk lookup (`ChunkReader.chunks_before`, Kafka), reassembly
   with keccak256 + CID (`publisher.chunks.assemble`), pinning (``KuboClient.add`` and the
   manifest's ``block/put``), and the registration alone in its batch
   (`publisher.registrar.submit_batch`: ``trackOf`` read, estimate, sign, send, receipt).
2. The service, for every ``--block-time`` and ``--batch-size``: ``python -m publisher`` as a
   real process on an anvil that mines a block every ``--block-time`` seconds (a transaction
   waits for the next block, as on a real chain), fresh topics and registry. A warm-up track
   is published first (the consumer group joined, the chain connected); then the case's
   tracks are written in one Kafka transaction, so that they all appear at once when it
   commits, as a burst from the GPUs would, and the writing does not share the CPUs with
   the publisher while it is measured. Reported: ``tracks_per_s`` = tracks / (last
   TrackPublished - the commit), the whole drain, the last block's wait included;
   ``steady_tracks_per_s`` = tracks after the first registration block / (last - first
   TrackPublished); transactions, tracks per transaction, blocks, and ``gas_per_track``
   from the registration receipts.
   ``--case-tracks`` (default: 2 x batch x max in flight + batch, 20 to 450) sizes each
   case so that it spans several blocks.
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
from eth_typing import HexStr

from acesteps.chain import connect, deploy_registry
from acesteps.dev.devchain import dev_key
from acesteps.dev.localstack import StackSettings
from acesteps.hashing import keccak256, keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.admin import delete_topics, ensure_topics
from acesteps.kafka.producer import send_record, transactional_producer
from acesteps.kafka.records import InRecord, OutRecord
from acesteps.messages import (
    MAX_CHUNK_BYTES,
    TYPE_HEADER,
    AudioChunk,
    AudioReady,
    TrackPublished,
    decode,
)
from acesteps.registry import Registry, TrackItem, offchain_request_id
from acesteps.registry import Track as Registered
from acesteps.settings import CommonSettings
from acesteps.topics import Topics
from bench.hashing import _best_seconds, _keccak_streamed
from publisher.chunks import ChunkReader, assemble
from publisher.manifests import pin_manifest
from publisher.provider import connect_for_sending
from publisher.registrar import Registration, submit_batch
from publisher.settings import PublisherSettings
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


async def write_tracks(
    bootstrap: str, topics: Topics, tracks: list[Track], *, at_once: bool = False
) -> list[InRecord]:
    """Each track in one transaction, as a generator writes it, or with ``at_once`` all of
    them in one (read_committed consumers see them all when it commits); the AudioReady
    records."""
    producer: AIOKafkaProducer = transactional_producer(bootstrap, f"{topics.prefix}.bench-gen")
    await producer.start()
    readies = []
    try:
        if at_once:
            await producer.begin_transaction()
        for track in tracks:
            outs = [OutRecord.chunk(topics.audio, c) for c in track.chunks]
            outs.append(OutRecord.message(topics.audio, track.request_id, track.ready))
            if not at_once:
                await producer.begin_transaction()
            futures = [await send_record(producer, out) for out in outs]
            metas = await asyncio.gather(*futures)
            if not at_once:
                await producer.commit_transaction()
            last, out = metas[-1], outs[-1]
            readies.append(
                InRecord(topics.audio, last.partition, last.offset, out.key, out.value, out.headers)
            )
        if at_once:
            await producer.commit_transaction()
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
                item = TrackItem(
                    rid, Registered(claims.audio_hash, added.cid), provenance, claims.offchain_id
                )
                finish = await submit_batch(registry, sender, [item], CONFIRMATIONS)
                (reg,) = await finish()
                registered = time.perf_counter()
                assert added.cid == claims.cid
                assert isinstance(reg, Registration) and not reg.already, reg
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
    names = ("chunk_lookup", "assemble", "pin_file_and_manifest", "register_tx")
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


def _default(name: str) -> int:
    value = PublisherSettings.model_fields[name].default
    assert isinstance(value, int)
    return value


MAX_IN_FLIGHT = _default("publisher_max_in_flight")


def case_tracks(batch: int, asked: int) -> int:
    """Enough tracks for two rounds of ``MAX_IN_FLIGHT`` batches, within 450 (540 MB)."""
    return asked or max(20, min(2 * batch * MAX_IN_FLIGHT + batch, 450))


async def bench_service(
    base: CommonSettings,
    kubo: tuple[str, str],
    case: tuple[float, int, int],
    size: int,
    tmp: Path,
    prefixes: list[str],
) -> dict[str, Any]:
    """Phase 2, one case: ``python -m publisher`` on a chain with ``block_time`` s blocks."""
    block_time, batch, count = case
    topics = Topics(f"bench{uuid.uuid4().hex[:10]}")
    prefixes.append(topics.prefix)
    await ensure_topics(base.kafka_bootstrap, topics.specs())
    anvil = Anvil(StackSettings().log_dir, block_time=block_time, keep_states=256).start()
    w3 = connect(anvil.url)
    proc: ServiceProcess | None = None
    try:
        deployment = await deploy_registry(w3, dev_key(0), PUBLISHER)
        warmup = make_track(size, deployment.address)
        tracks = [make_track(size, deployment.address) for _ in range(count)]
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
            "ACESTEPS_PUBLISHER_BATCH_SIZE": str(batch),
            "ACESTEPS_LOG_LEVEL": "WARNING",
        }
        log = StackSettings().log_dir / f"publisher-{topics.prefix}.log"
        proc = ServiceProcess("publisher", env, log)
        started = time.monotonic()
        proc.start()
        await write_tracks(base.kafka_bootstrap, topics, [warmup])
        await _published(base.kafka_bootstrap, topics, proc, 1, started)
        writing = time.time()
        await write_tracks(base.kafka_bootstrap, topics, tracks, at_once=True)
        visible = time.time()  # committed: the publisher sees the whole backlog now
        records = await _published(base.kafka_bootstrap, topics, proc, count + 1, started)
        receipts: dict[str, Any] = {}
        published = [decode(TrackPublished, r.value) for r in records]
        for track in published:
            if track.tx_hash not in receipts:
                tx = HexStr(track.tx_hash)
                receipts[track.tx_hash] = await w3.eth.get_transaction_receipt(tx)
    finally:
        if proc is not None:
            proc.stop()
        await w3.provider.disconnect()
        anvil.stop()
    wanted = {t.request_id for t in tracks} | {warmup.request_id}
    assert {p.request_id for p in published} == wanted and len(published) == len(wanted)
    measured = [
        (r.timestamp / 1000, p)  # ms, set by the publisher's producer
        for r, p in zip(records, published, strict=True)
        if p.request_id != warmup.request_id
    ]
    stamps = sorted(t for t, _ in measured)
    first_block = min(p.block_number for _, p in measured)
    later = [t for t, p in measured if p.block_number != first_block]
    txs = {p.tx_hash for _, p in measured}
    gas = sum(int(receipts[tx]["gasUsed"]) for tx in txs)
    per_tx = [sum(1 for _, p in measured if p.tx_hash == tx) for tx in txs]
    steady_span = stamps[-1] - min(t for t, p in measured if p.block_number == first_block)
    return {
        "block_time_s": block_time,
        "batch_size": batch,
        "tracks": count,
        "tracks_per_s": round(count / (stamps[-1] - visible), 2),
        "steady_tracks_per_s": round(len(later) / steady_span, 2) if later else None,
        "write_s": round(visible - writing, 2),
        "drain_s": round(stamps[-1] - visible, 2),
        "transactions": len(txs),
        "tracks_per_tx_mean": round(count / len(txs), 1),
        "tracks_per_tx_max": max(per_tx),
        "blocks": len({p.block_number for _, p in measured}),
        "gas_per_track": round(gas / count),
    }


async def _published(
    bootstrap: str, topics: Topics, proc: ServiceProcess, count: int, started: float
) -> list[Any]:
    """The TrackPublished records (read_committed), once there are ``count``."""
    while True:
        records = [
            r
            for r in await read_all(bootstrap, topics.tracks)
            if dict(r.headers)[TYPE_HEADER] == b"TrackPublished"  # not TrackFinalized
        ]
        if len(records) >= count:
            return records
        if not proc.alive():
            raise RuntimeError(f"the publisher exited:\n{proc.tail()}")
        if time.monotonic() - started > E2E_TIMEOUT_S:
            raise RuntimeError(f"{len(records)}/{count} published in time")
        await asyncio.sleep(0.5)


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
    services = []
    with tempfile.TemporaryDirectory(prefix="bench-publisher-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            async with private_kubo(args.ipfs_api_url, tmp) as kubo:
                anvil = Anvil(StackSettings().log_dir).start()
                try:
                    steps = await bench_steps(base, anvil, kubo[0], args.tracks, args.track_bytes)
                finally:
                    anvil.stop()
                prefixes.append(steps.pop("topics_prefix"))
                for block_time in args.block_time or [2.0, 12.0]:
                    for batch in args.batch_size or [1, 10, 50]:
                        case = (block_time, batch, case_tracks(batch, args.case_tracks))
                        services.append(
                            await bench_service(base, kubo, case, args.track_bytes, tmp, prefixes)
                        )
                        print(json.dumps(services[-1]), file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                await delete_topics(base.kafka_bootstrap, prefixes)
    hashing = bench_hashing(args.hash_mb, args.hash_runs, steps["assemble_mb_per_s"])
    return {
        "bench": "publisher",
        "tracks": args.tracks,
        "track_bytes": args.track_bytes,
        "chunks_per_track": math.ceil(args.track_bytes / MAX_CHUNK_BYTES),
        "confirmations": CONFIRMATIONS,
        "max_in_flight": MAX_IN_FLIGHT,
        "batch_wait_ms": _default("publisher_batch_wait_ms"),
        "ipfs": args.ipfs_api_url or "private Kubo (offline, test profile)",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "steps_in_process": steps,
        "service": services,
        "hashing": hashing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="publisher throughput and its time split")
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--track-bytes", type=int, default=1_200_000)
    parser.add_argument("--hash-mb", type=int, default=50)
    parser.add_argument("--hash-runs", type=int, default=3)
    parser.add_argument("--ipfs-api-url", help="use this Kubo instead of a private one")
    parser.add_argument(
        "--block-time", type=float, action="append", help="seconds; repeat it (default 2, 12)"
    )
    parser.add_argument(
        "--batch-size", type=int, action="append", help="repeat it (default 1, 10, 50)"
    )
    parser.add_argument("--case-tracks", type=int, default=0, help="tracks per service case")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
