"""A consume-transform-produce worker for the crash test (``test_kafka_transactions.py``).

Runs `acesteps.kafka.loop.TransactionalLoop` on ``IN`` and copies each record to ``OUT``
(same key, value ``out:<value>``). With ``--pause-after N``, once it has handled N records
its producer stops just before committing that batch's transaction, after the outputs are
acknowledged by the broker: it writes the key of the N-th record to ``--marker`` and sleeps,
so the test can SIGKILL the process between produce and commit. The pause lives here, in a
producer subclass driven by a flag the handler sets in its deps, not in the library. With
``--handle-ms M`` each record takes M ms to handle, and the worker writes ``--marker`` when it
starts on its first record (the zombie test freezes it mid-batch then).

    python -m tests.integration.kafka_worker BOOTSTRAP PREFIX TXN_ID [--pause-after N --marker F]
        [--handle-ms M]

SIGTERM stops it cleanly (exit 0) after the batch in progress.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from acesteps.backoff import Backoff
from acesteps.kafka.loop import LoopConfig, TransactionalLoop
from acesteps.kafka.producer import transactional_producer
from acesteps.kafka.records import InRecord, OutRecord


@dataclass
class Deps:
    out_topic: str
    pause_after: int | None
    marker: Path | None
    handle_s: float = 0.0
    handled: int = 0
    paused_key: bytes | None = None


async def handle(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    if deps.handle_s:
        if deps.handled == 0 and deps.marker is not None:
            deps.marker.write_bytes(record.key or b"")
        await asyncio.sleep(deps.handle_s)
    deps.handled += 1
    if deps.handled == deps.pause_after:
        deps.paused_key = record.key
    return [OutRecord(deps.out_topic, record.key, b"out:" + (record.value or b""))]


class PausingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """Stops for good before committing once the handler has raised ``deps.pause_now``."""

    deps: Deps

    async def commit_transaction(self) -> None:
        if self.deps.paused_key is not None and self.deps.marker is not None:
            await self.flush()  # the outputs are on the broker, in the open transaction
            partial = self.deps.marker.with_suffix(".partial")
            partial.write_bytes(self.deps.paused_key)
            partial.replace(self.deps.marker)  # the test never reads a half-written key
            await asyncio.Event().wait()  # until SIGKILL
        await super().commit_transaction()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("transactional_id")
    ap.add_argument("--pause-after", type=int, default=None)
    ap.add_argument("--marker", type=Path, default=None)
    ap.add_argument("--max-records", type=int, default=5)
    ap.add_argument("--handle-ms", type=int, default=0)
    return ap.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    deps = Deps(
        out_topic=f"{args.prefix}.out",
        pause_after=args.pause_after,
        marker=args.marker,
        handle_s=args.handle_ms / 1000,
    )
    config = LoopConfig(
        bootstrap=args.bootstrap,
        group_id=f"{args.prefix}.worker",
        transactional_id=args.transactional_id,
        # Static membership: the restarted worker takes the partitions back at once instead
        # of waiting for the group to time out the killed member.
        group_instance_id=args.transactional_id,
        topics=(f"{args.prefix}.in",),
        failures_topic=f"{args.prefix}.failures.v1",
        deadletter_topic=f"{args.prefix}.deadletter.v1",
        stage="generator",
        max_records=args.max_records,
        poll_timeout_ms=200,
        backoff=Backoff(initial_s=0.05, max_s=0.5),
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )

    def producer() -> Any:
        made = transactional_producer(
            config.bootstrap, config.transactional_id, cls=PausingProducer
        )
        made.deps = deps
        return made

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await TransactionalLoop(config, handle, deps, producer_factory=producer).run(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main(parse()))
