"""Chain listener: backfill throughput and 1-confirmation latency, as one JSON object.

    .cache/venv/bin/python bench/listener.py [--requests N --blocks-between M]

Needs the local Kafka of ``scripts/stack up`` (``ACESTEPS_KAFKA_BOOTSTRAP``, default
127.0.0.1:19092) and anvil; each phase runs its own anvil on a free port, so the shared
stack's chain is left alone. The listener runs in this process (`run_chain_listener` in an
asyncio task), on topics of its own (a fresh prefix per run, deleted at the end).

1. Backfill: a chain of ``--requests`` requests, ``--per-block`` to a block with
   ``--blocks-between`` empty blocks after each (defaults: 1,000 requests over 10,001 blocks).
   Building it is timed apart (anvil's mining, not the listener). Then, for each
   ``--ranges`` value (``listener_max_block_range``), a listener with 1 confirmation starts
   on it and is timed until a read_committed consumer has seen all requests and the
   checkpoint at head - 1. ``steady_*`` rates leave out start-up (time to the first
   committed checkpoint).
2. Latency: on a fresh short chain, a live listener (1 confirmation) and a read_committed
   consumer kept assigned and polling; ``--samples`` times: a request (mined at once), then
   one more block (the confirmation); the latency runs from that block being mined to the
   request's record reaching the consumer. Each sample starts after a random pause in
   [0, poll interval) so that it does not lock onto the listener's polling phase. Run with
   each ``--poll-intervals`` value.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from acesteps.dev.localstack import StackSettings
from acesteps.kafka.admin import delete_topics, ensure_topics
from acesteps.messages import ListenerCheckpoint, decode
from listener.chainservice import run_chain_listener
from listener.settings import ListenerSettings
from tests.integration.anvil import Anvil
from tests.integration.chainload import ChainLoader
from tests.integration.kafkaread import partitions

CONFIRMATIONS = 1
FETCH_MAX_WAIT_MS = 50  # the consumer's long-poll; bounds its share of the latency
LISTENER_TIMEOUT_S = 120


def _settings(base: ListenerSettings, **changes: object) -> ListenerSettings:
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    return base.with_overrides(
        topic_prefix=prefix,
        listener_confirmations=CONFIRMATIONS,
        listener_rpc_backoff_max_s=1.0,
        **changes,
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 1),
        "p90": round(cuts[89], 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
        "mean": round(statistics.fmean(values), 1),
    }


async def _consumer(settings: ListenerSettings, topics: list[str]) -> AIOKafkaConsumer:
    """A read_committed consumer assigned to every partition of ``topics``, from the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    tps: list[TopicPartition] = []
    for topic in topics:
        tps += await partitions(settings.kafka_bootstrap, topic)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def _stop_listener(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 30)  # re-raises what the listener died of


# ---------------------------------------------------------------------- backfill


async def backfill(
    base: ListenerSettings, url: str, contract: str, start_block: int, head: int, n: int, rng: int
) -> dict[str, Any]:
    settings = _settings(
        base,
        rpc_url=url,
        contract_address=contract,
        listener_start_block=start_block,
        listener_max_block_range=rng,
        listener_poll_interval_s=0.1,
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
    topics = settings.topics
    consumer = await _consumer(settings, [topics.requests, topics.checkpoints])
    target = head - CONFIRMATIONS
    keys: set[bytes] = set()
    records = checkpoints = 0
    cp_block = -1
    t_first_cp = t_requests = t_done = None
    stop = asyncio.Event()
    t0 = time.perf_counter()
    task = asyncio.create_task(run_chain_listener(settings, stop))
    try:
        async with asyncio.timeout(LISTENER_TIMEOUT_S):
            while t_done is None:
                if task.done():
                    task.result()
                    raise RuntimeError("the listener stopped on its own")
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for tp, messages in batches.items():
                    for msg in messages:
                        if tp.topic == topics.requests:
                            records += 1
                            keys.add(msg.key)
                        else:
                            checkpoints += 1
                            cp_block = decode(ListenerCheckpoint, msg.value).block_number
                            if t_first_cp is None:
                                t_first_cp = (now, cp_block)
                if t_requests is None and len(keys) >= n:
                    t_requests = now
                if t_requests is not None and cp_block >= target:
                    t_done = now
    finally:
        await consumer.stop()
        await _stop_listener(stop, task)
    assert t_first_cp is not None and t_requests is not None
    elapsed = t_done - t0
    blocks = target - start_block + 1
    steady_s = t_done - t_first_cp[0]
    steady_blocks = target - t_first_cp[1]
    return {
        "max_block_range": rng,
        "topic_prefix": settings.topic_prefix,
        "blocks_scanned": blocks,
        "checkpoints_committed": checkpoints,
        "requests_seen": records,
        "distinct_request_ids": len(keys),
        "seconds_to_all_requests": round(t_requests - t0, 3),
        "seconds_to_checkpoint_head_minus_1": round(elapsed, 3),
        "seconds_to_first_checkpoint": round(t_first_cp[0] - t0, 3),
        "events_per_s": round(n / elapsed, 1),
        "blocks_per_s": round(blocks / elapsed, 1),
        "steady_blocks_per_s": (
            round(steady_blocks / steady_s, 1) if steady_blocks > 0 and steady_s > 0 else None
        ),
    }


# ---------------------------------------------------------------------- latency


class Arrivals:
    """Polls a consumer in the background and notes when each key arrives."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.seen: dict[bytes, float] = {}
        self.waiting: dict[bytes, asyncio.Future[float]] = {}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000)
            now = time.perf_counter()
            for messages in batches.values():
                for msg in messages:
                    self.seen[msg.key] = now
                    fut = self.waiting.pop(msg.key, None)
                    if fut is not None and not fut.done():
                        fut.set_result(now)

    async def wait(self, key: bytes, timeout_s: float = 30) -> float:
        if key in self.seen:
            return self.seen[key]
        fut = self.waiting.setdefault(key, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(fut, timeout_s)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.consumer.stop()


async def latency(
    base: ListenerSettings, url: str, loader: ChainLoader, contract: str, poll_s: float, n: int
) -> dict[str, Any]:
    start_block = await asyncio.to_thread(loader.head)
    settings = _settings(
        base,
        rpc_url=url,
        contract_address=contract,
        listener_start_block=start_block,
        listener_poll_interval_s=poll_s,
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
    arrivals = Arrivals(await _consumer(settings, [settings.topics.requests]))
    stop = asyncio.Event()
    task = asyncio.create_task(run_chain_listener(settings, stop))
    warmup = 2
    samples: list[float] = []
    try:
        for i in range(warmup + n):
            if task.done():
                task.result()
                raise RuntimeError("the listener stopped on its own")
            await asyncio.sleep(random.uniform(0, poll_s))
            tx = await asyncio.to_thread(loader.request, f"latency sample {i}")
            (req,) = await asyncio.to_thread(loader.requested, [tx])
            await asyncio.to_thread(loader.mine, 1)
            mined = time.perf_counter()
            arrived = await arrivals.wait(req.request_id.encode())
            if i >= warmup:
                samples.append((arrived - mined) * 1000)
    finally:
        await arrivals.stop()
        await _stop_listener(stop, task)
    return {
        "poll_interval_s": poll_s,
        "topic_prefix": settings.topic_prefix,
        "samples": len(samples),
        "warmup_samples_dropped": warmup,
        "latency_ms": _percentiles(samples),
    }


# ---------------------------------------------------------------------- main


def _anvil_version() -> str:
    out = subprocess.run(
        [str(StackSettings().anvil_bin), "--version"], capture_output=True, text=True, check=False
    )
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = ListenerSettings()
    log_dir = StackSettings().log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    prefixes: list[str] = []
    try:
        # 1. Backfill.
        node = Anvil(log_dir, keep_states=256).start()
        try:
            loader = ChainLoader(node.url)
            contract = await asyncio.to_thread(loader.deploy)
            deploy_block = await asyncio.to_thread(loader.head)
            t0 = time.perf_counter()
            expected = await asyncio.to_thread(
                loader.bulk, args.requests, args.per_block, args.blocks_between
            )
            build_s = time.perf_counter() - t0
            head = await asyncio.to_thread(loader.head)
            runs = []
            for rng in args.ranges:
                out = await backfill(
                    base, node.url, contract, deploy_block, head, len(expected), rng
                )
                prefixes.append(out["topic_prefix"])
                runs.append(out)
        finally:
            node.stop()
        result["backfill"] = {
            "chain": {
                "anvil_blocks": head + 1,
                "head": head,
                "deploy_block": deploy_block,
                "requests": len(expected),
                "per_block": args.per_block,
                "empty_blocks_between": args.blocks_between,
                "build_seconds": round(build_s, 2),
                "anvil_prune_history": 256,
            },
            "runs": runs,
        }

        # 2. Latency at 1 confirmation, on a short chain of its own.
        node = Anvil(log_dir, keep_states=256).start()
        try:
            loader = ChainLoader(node.url)
            contract = await asyncio.to_thread(loader.deploy)
            runs = []
            for poll_s in args.poll_intervals:
                out = await latency(base, node.url, loader, contract, poll_s, args.samples)
                prefixes.append(out["topic_prefix"])
                runs.append(out)
            latency_blocks = await asyncio.to_thread(loader.head) + 1
        finally:
            node.stop()
        result["latency"] = {"anvil_blocks": latency_blocks, "runs": runs}
    finally:
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                await delete_topics(base.kafka_bootstrap, prefixes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="chain listener backfill and latency")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--blocks-between", type=int, default=99)
    parser.add_argument("--ranges", type=int, nargs="+", default=[2000, 500])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--poll-intervals", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the topics")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    started = time.perf_counter()
    result = asyncio.run(run(args))
    print(
        json.dumps(
            {
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "cpus_usable": len(os.sched_getaffinity(0)),
                    "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "anvil": _anvil_version(),
                },
                "settings": {
                    "confirmations": CONFIRMATIONS,
                    "block_tag": "latest",
                    "backfill_poll_interval_s": 0.1,
                    "max_block_ranges": args.ranges,
                    "latency_poll_intervals_s": args.poll_intervals,
                    "latency_samples": args.samples,
                    "consumer": {
                        "isolation_level": "read_committed",
                        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
                    },
                    "kafka_bootstrap": ListenerSettings().kafka_bootstrap,
                    "listener": "in-process asyncio task (run_chain_listener)",
                },
                **result,
                "total_seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
