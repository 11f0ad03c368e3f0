"""The HTTP API's latency overhead: time in the API beyond the pipeline, as one JSON object.

    .cache/venv/bin/python bench/api.py [--requests 20 --duration 5 --concurrent 4 ...]

Needs the local Kafka and Kubo of ``scripts/stack up`` (``source .cache/run/stack.env``).
The whole service runs as real subprocesses, as in production: a private anvil (free
loopback port) with a fresh ``AceStepsRegistry``, then ``python -m listener`` (chain
listener + HTTP API on a free port, status store in a fresh SQLite file), ``python -m
generator`` (the tiny random-weight model on CPU) and ``python -m publisher``, all on a
fresh topic prefix whose topics are deleted at the end (the API tests' own launcher,
`tests.integration.pipeline`). Rate limits are lifted for the run;
the client is one ``aiohttp`` session (keep-alive) in this process.

1. Waiting submits: ``--warmup`` requests (dropped: model load, first connections), then
   ``--requests`` ``POST /api/generate`` one after the other, each waiting for the final
   answer (200). For each, four times on one wall clock (every process is on this machine):
   ``sent`` and ``answered`` as the client sees them, the Kafka timestamp of the request's
   record on ``PREFIX.requests.v1`` (set when the API's producer queues it) and that of its
   ``TrackPublished`` on ``PREFIX.tracks.v1`` (set when the publisher queues it, inside its
   transaction), read read_committed after the run, keyed by request id. Then

       pipeline = tracks ts - requests ts      (generator + publisher, the work itself)
       overhead = client latency - pipeline    (what the API adds)
                = before_request_record + after_track_record

   ``before_request_record`` is the client's send, HTTP parsing, validation, the store
   insert, up to the producer's queueing of the record. ``after_track_record`` is the
   publisher's transaction commit (the record is invisible to read_committed readers until
   then), the projection's fetch, its store write, the wake-up of the waiting handler and
   the response. A read_committed consumer in this process, configured as the projection is
   (no group, ``fetch_max_wait_ms=100``), notes when each ``TrackPublished`` becomes
   readable, which splits the latter into ``track_commit_and_fetch`` (until readable) and
   ``api_after_track_readable`` (the projection's own share plus the response; the
   projection fetches the same record at about the same time). ``api_own`` =
   ``before_request_record`` + ``api_after_track_readable``: the overhead less the
   publisher's commit and the fetch that sees it. Kafka timestamps have millisecond
   resolution, so the split of each request is good to about 1 ms.
2. Concurrent waiting submits: ``--concurrent-rounds`` rounds of ``--concurrent`` requests
   sent at once; the same split. Pipeline time now includes queueing in the generator.
3. Submit alone: ``--async-requests`` ``POST /api/generate?wait=0`` one after the other
   (202 once the request record is acknowledged by Kafka); they are then left to finish.
4. Reads: ``--reads`` ``GET /api/generations/{id}`` of a completed request, one after the
   other, once the pipeline is idle.

For 3 and 4, and for the waiting submits, the server's own time per request comes from the
API's Prometheus histogram ``acesteps_api_request_seconds`` (sum/count delta over the
phase): client latency minus it is the HTTP client and loopback share.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer

from acesteps.kafka.admin import delete_topics, topic_partitions
from acesteps.messages import TYPE_HEADER, TrackPublished, decode
from acesteps.settings import CommonSettings
from acesteps.topics import Topics
from tests.integration.pipeline import Pipeline, running_pipeline

PROMPT = "calm piano loop, soft pads"
FETCH_MAX_WAIT_MS = 100  # as the API's projection
FINAL_TIMEOUT_S = 300
NO_LIMIT = {"PER_MINUTE": "1000000000", "BURST": "1000000"}
ROUTE_GET = "/api/generations/{id}"
ROUTE_POST = "/api/generate"
Route = tuple[str, str]  # (method, route)
Stats = dict[str, Any]


# ---------------------------------------------------------------------- the service


@dataclass
class Stack:
    """The running service of the API tests (`tests.integration.pipeline`)."""

    pipeline: Pipeline

    @property
    def api_url(self) -> str:
        return self.pipeline.api_url

    @property
    def topics(self) -> Topics:
        return Topics(self.pipeline.prefix)

    @property
    def log_dir(self) -> Path:
        return self.pipeline.log_dir

    def check(self) -> None:
        for name, proc in self.pipeline.services.items():
            if not proc.alive():
                raise RuntimeError(f"{name} exited; its log ends:\n{proc.tail()}")


@contextlib.asynccontextmanager
async def running_service(base: CommonSettings) -> AsyncIterator[Stack]:
    """Private anvil + fresh registry, then listener (API), generator, publisher; no limits."""
    limits = {
        f"ACESTEPS_API_{kind}_{name}": value
        for kind in ("GENERATE", "READ")
        for name, value in NO_LIMIT.items()
    }
    # Starting blocks this event loop for a few seconds, before anything else runs on it.
    with running_pipeline(base, **limits) as pipeline:
        yield Stack(pipeline)


# ---------------------------------------------------------------------- Kafka


class TrackWatcher:
    """A read_committed consumer on the tracks topic: when each request's record is readable."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.readable: dict[str, float] = {}  # request id -> time.time()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        tps = await topic_partitions(self.bootstrap, [self.topic])
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000)
            now = time.time()
            for records in batches.values():
                for r in records:
                    self.readable.setdefault(r.key.decode(), now)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def read_timestamps(bootstrap: str, topic: str, kind: bytes | None) -> dict[str, int]:
    """request id -> Kafka timestamp (ms) of its first record (of type ``kind``) on ``topic``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    out: dict[str, int] = {}
    try:
        tps = await topic_partitions(bootstrap, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(30):
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                for records in (await consumer.getmany(*tps, timeout_ms=200)).values():
                    for r in records:
                        if kind is not None and dict(r.headers or ()).get(TYPE_HEADER) != kind:
                            continue
                        if kind == b"TrackPublished":
                            rid = decode(TrackPublished, r.value).request_id
                        else:
                            rid = r.key.decode()
                        out.setdefault(str(rid), r.timestamp)
    finally:
        await consumer.stop()
    return out


# ---------------------------------------------------------------------- HTTP


@dataclass
class Call:
    request_id: str
    status: int
    final_status: str
    sent: float  # time.time()
    latency_s: float  # perf_counter difference

    @property
    def answered(self) -> float:
        return self.sent + self.latency_s


async def post_generate(
    session: aiohttp.ClientSession, url: str, duration: float, seed: int, wait: str | None
) -> Call:
    body = {"prompt": PROMPT, "duration": duration, "seed": seed, "tags": ["bench"]}
    target = f"{url}/api/generate" + (f"?wait={wait}" if wait is not None else "")
    sent = time.time()
    t0 = time.perf_counter()
    async with session.post(target, json=body) as answer:
        doc = await answer.json()
    latency = time.perf_counter() - t0
    if answer.status not in (200, 202):
        raise RuntimeError(f"POST {target}: {answer.status} {doc}")
    return Call(doc["id"], answer.status, doc["status"], sent, latency)


async def get_generation(session: aiohttp.ClientSession, url: str, rid: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/generations/{rid}") as answer:
        doc: dict[str, Any] = await answer.json()
        if answer.status != 200:
            raise RuntimeError(f"GET {rid}: {answer.status} {doc}")
        return doc


async def server_time(session: aiohttp.ClientSession, url: str) -> dict[Route, list[float]]:
    """(method, route) -> [sum seconds, count] of the API's request histogram."""
    async with session.get(f"{url}/metrics") as answer:
        text = await answer.text()
    out: dict[Route, list[float]] = {}
    pattern = re.compile(r"^acesteps_api_request_seconds_(sum|count)\{(.*)\} (\S+)$", re.M)
    for part, labels, value in pattern.findall(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        slot = out.setdefault((found["method"], found["route"]), [0.0, 0.0])
        slot[0 if part == "sum" else 1] = float(value)
    return out


def server_mean_ms(
    before: dict[Route, list[float]],
    after: dict[Route, list[float]],
    method: str,
    route: str,
) -> float | None:
    a, b = after.get((method, route), [0.0, 0.0]), before.get((method, route), [0.0, 0.0])
    count = a[1] - b[1]
    return round((a[0] - b[0]) / count * 1000, 3) if count else None


# ---------------------------------------------------------------------- numbers


def _stats(values: list[float], digits: int = 1, cuts: tuple[int, ...] = (50, 90)) -> Stats:
    """n, mean, the percentiles ``cuts`` and max (``statistics.quantiles``, inclusive)."""
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else None
    out: dict[str, Any] = {"n": len(values), "mean": round(statistics.fmean(values), digits)}
    for c in cuts:
        out[f"p{c}"] = round(q[c - 1] if q else values[0], digits)
    out["max"] = round(max(values), digits)
    return out


def split(
    calls: list[Call],
    request_ts: dict[str, int],
    track_ts: dict[str, int],
    readable: dict[str, float],
) -> dict[str, Any]:
    """Client latency, pipeline time and the API's overhead of waiting submits, in ms."""
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "client_latency",
            "pipeline",
            "overhead",
            "before_request_record",
            "after_track_record",
            "track_commit_and_fetch",
            "api_after_track_readable",
            "api_own",
        )
    }
    shares: list[float] = []
    missing = []
    for c in calls:
        rts, tts = request_ts.get(c.request_id), track_ts.get(c.request_id)
        if c.final_status != "completed" or rts is None or tts is None:
            missing.append({"id": c.request_id, "status": c.final_status})
            continue
        client = c.latency_s * 1000
        pipeline = tts - rts
        cols["client_latency"].append(client)
        cols["pipeline"].append(pipeline)
        cols["overhead"].append(client - pipeline)
        cols["before_request_record"].append(rts - c.sent * 1000)
        cols["after_track_record"].append(c.answered * 1000 - tts)
        shares.append((client - pipeline) / client)
        seen = readable.get(c.request_id)
        if seen is not None:
            cols["track_commit_and_fetch"].append(seen * 1000 - tts)
            cols["api_after_track_readable"].append(c.answered * 1000 - seen * 1000)
            # The overhead less the publisher's commit and the fetch that sees it.
            cols["api_own"].append(rts - c.sent * 1000 + c.answered * 1000 - seen * 1000)
    out: dict[str, Any] = {f"{k}_ms": _stats(v) for k, v in cols.items()}
    out["overhead_share_of_client_latency"] = _stats(shares, 4)
    if missing:
        out["not_completed"] = missing
    return out


# ---------------------------------------------------------------------- run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = CommonSettings()
    result: dict[str, Any] = {}
    prefix = None
    try:
        async with running_service(base) as stack:
            prefix = stack.topics.prefix
            result["topic_prefix"] = prefix
            result["logs"] = str(stack.log_dir)
            watcher = TrackWatcher(base.kafka_bootstrap, stack.topics.tracks)
            await watcher.start()
            conn = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=FINAL_TIMEOUT_S)
            try:
                async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
                    result.update(await phases(args, stack, session, base, watcher))
            finally:
                await watcher.stop()
    finally:
        if prefix and not args.keep_topics:
            with contextlib.suppress(Exception):
                await delete_topics(base.kafka_bootstrap, [prefix])
    return result


async def phases(
    args: argparse.Namespace,
    stack: Stack,
    session: aiohttp.ClientSession,
    base: CommonSettings,
    watcher: TrackWatcher,
) -> dict[str, Any]:
    url = stack.api_url
    t_start = time.perf_counter()
    startup_s = time.perf_counter() - t_start
    seed = iter(range(1, 10**9))

    async def waiting(n: int) -> list[Call]:
        calls = []
        for _ in range(n):
            stack.check()
            calls.append(await post_generate(session, url, args.duration, next(seed), None))
        return calls

    # Warm-up: model load, first connections, first transactions.
    t0 = time.perf_counter()
    await waiting(args.warmup)
    warmup_s = time.perf_counter() - t0

    # 1. Sequential waiting submits.
    before = await server_time(session, url)
    sequential = await waiting(args.requests)
    after = await server_time(session, url)
    seq_server = server_mean_ms(before, after, "POST", ROUTE_POST)

    # 2. Concurrent waiting submits.
    concurrent: list[Call] = []
    for _ in range(args.concurrent_rounds):
        stack.check()
        concurrent += await asyncio.gather(
            *[
                post_generate(session, url, args.duration, next(seed), None)
                for _ in range(args.concurrent)
            ]
        )

    # 3. Submit alone (202), then let those requests finish.
    before = await server_time(session, url)
    submitted = []
    for _ in range(args.async_requests):
        submitted.append(await post_generate(session, url, args.duration, next(seed), "0"))
    after = await server_time(session, url)
    async_server = server_mean_ms(before, after, "POST", ROUTE_POST)
    deadline = time.monotonic() + FINAL_TIMEOUT_S
    pending = {c.request_id for c in submitted}
    while pending:
        stack.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} requests submitted with wait=0 did not finish")
        for rid in list(pending):
            if (await get_generation(session, url, rid))["status"] in (
                "completed",
                "failed",
                "revoked",
            ):
                pending.discard(rid)
        await asyncio.sleep(0.5)

    # 4. Reads of a completed request, the pipeline idle.
    target = next(c.request_id for c in sequential if c.final_status == "completed")
    for _ in range(20):  # warm
        await get_generation(session, url, target)
    before = await server_time(session, url)
    reads = []
    for _ in range(args.reads):
        t0 = time.perf_counter()
        await get_generation(session, url, target)
        reads.append((time.perf_counter() - t0) * 1000)
    after = await server_time(session, url)
    read_server = server_mean_ms(before, after, "GET", ROUTE_GET)

    # Kafka timestamps, read_committed, after the run.
    await asyncio.sleep(1)  # the watcher's last fetch
    request_ts = await read_timestamps(base.kafka_bootstrap, stack.topics.requests, None)
    track_ts = await read_timestamps(base.kafka_bootstrap, stack.topics.tracks, b"TrackPublished")
    readable = dict(watcher.readable)

    async_latency = [c.latency_s * 1000 for c in submitted]
    async_record = [
        request_ts[c.request_id] - c.sent * 1000 for c in submitted if c.request_id in request_ts
    ]
    seq = split(sequential, request_ts, track_ts, readable)
    seq["server_handler_mean_ms"] = seq_server
    return {
        "startup_s": round(startup_s, 2),
        "warmup_requests": args.warmup,
        "warmup_s": round(warmup_s, 2),
        "sequential_waiting": seq,
        "concurrent_waiting": {
            "concurrent": args.concurrent,
            "rounds": args.concurrent_rounds,
            **split(concurrent, request_ts, track_ts, readable),
        },
        "submit_wait0": {
            "statuses": sorted({c.status for c in submitted}),
            "client_latency_ms": _stats(async_latency, 2, (50, 99)),
            "server_handler_mean_ms": async_server,
            "sent_to_request_record_ms": _stats(async_record, 1),
        },
        "read_generation": {
            "client_latency_ms": _stats(reads, 3, (50, 99)),
            "server_handler_mean_ms": read_server,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP API latency overhead")
    parser.add_argument("--requests", type=int, default=20, help="sequential waiting submits")
    parser.add_argument("--duration", type=float, default=5.0, help="track seconds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--concurrent-rounds", type=int, default=2)
    parser.add_argument("--async-requests", type=int, default=10, help="POST ?wait=0 count")
    parser.add_argument("--reads", type=int, default=500, help="GET /api/generations/{id}")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the topics")
    args = parser.parse_args()
    started = time.perf_counter()
    result = asyncio.run(run(args))
    print(
        json.dumps(
            {
                "bench": "api",
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "cpus_usable": len(os.sched_getaffinity(0)),
                    "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                },
                "parameters": {
                    "requests": args.requests,
                    "duration_s": args.duration,
                    "warmup": args.warmup,
                    "concurrent": args.concurrent,
                    "concurrent_rounds": args.concurrent_rounds,
                    "async_requests": args.async_requests,
                    "reads": args.reads,
                    "model": "tiny (random weights, CPU)",
                    "store": "SQLite",
                    "publisher_confirmations": 1,
                    "chain": "private anvil, instant mining",
                    "client": "aiohttp, one keep-alive session",
                },
                **result,
                "total_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
