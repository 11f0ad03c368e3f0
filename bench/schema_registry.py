"""Schema registry mode against plain JSON: records/s produced and consumed, as one JSON object.

    scripts/stack up && scripts/stack registry up
    .cache/venv/bin/python bench/schema_registry.py [--records N] [--registry URL]

Needs the local Kafka (``ACESTEPS_KAFKA_BOOTSTRAP``, default 127.0.0.1:19092) and a
Confluent-compatible registry (default: the stack's, ``scripts/stack registry up``). For
each mode (plain JSON, then the registry's wire format), one run: ``--records``
`GenerationRequest` records are encoded (`OutRecord.message`, the one place values are
made), produced by an idempotent ``acks=all`` producer to a topic of their own and flushed,
then read back by a read_committed consumer and decoded (`decode_value`). Also timed: the
start-up registration of every record type's schema (`acesteps.kafka.schema_registry.configure`).
The topics (a fresh prefix per run) are deleted at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from acesteps.kafka import schema_registry as registry
from acesteps.kafka.admin import delete_topics, ensure_topics
from acesteps.kafka.producer import idempotent_producer, send_record
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import GenerationRequest
from acesteps.topics import TopicSpec
from tests.integration.kafkaread import partitions

DEFAULT_REGISTRY = "http://127.0.0.1:18081/apis/ccompat/v7"


def _requests(n: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            request_id="0x" + f"{i:064x}",
            source="http",
            requester="bench",
            prompt=f"chill lofi beat with rain sounds, take {i}",
            tags=("lofi", "rain"),
            duration_s=30,
        )
        for i in range(n)
    ]


async def _one_mode(
    bootstrap: str, topic: str, requests: list[GenerationRequest]
) -> dict[str, Any]:
    began = time.perf_counter()
    records = [OutRecord.message(topic, r.request_id, r) for r in requests]
    encode_s = time.perf_counter() - began

    producer = idempotent_producer(bootstrap, linger_ms=5)
    await producer.start()
    try:
        began = time.perf_counter()
        futures = [await send_record(producer, record) for record in records]
        await producer.flush()
        for future in futures:
            await future
        produce_s = time.perf_counter() - began
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await partitions(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        began = time.perf_counter()
        decoded, framed = 0, 0
        while decoded < len(records):
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                for raw in batch:
                    decode_value(GenerationRequest, InRecord.of(raw))
                    framed += raw.value[:1] == b"\x00"
                    decoded += 1
        consume_s = time.perf_counter() - began
    finally:
        await consumer.stop()
    n = len(records)
    return {
        "value_bytes": len(records[0].value or b""),
        "framed_records": framed,
        "encode_per_s": round(n / encode_s),
        "produce_per_s": round(n / produce_s),
        "consume_decode_per_s": round(n / consume_s),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--registry", default=DEFAULT_REGISTRY)
    args = parser.parse_args()
    bootstrap = os.environ.get("ACESTEPS_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = {mode: f"{prefix}.{mode}.v1" for mode in ("plain", "registry")}
    await ensure_topics(bootstrap, [TopicSpec(t, 6, {}) for t in topics.values()])
    requests = _requests(args.records)
    out: dict[str, Any] = {
        "bench": "schema_registry",
        "records": args.records,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    try:
        registry.configure(None)
        out["plain"] = await _one_mode(bootstrap, topics["plain"], requests)
        began = time.perf_counter()
        ids = registry.configure(args.registry)
        out["registration_ms"] = round((time.perf_counter() - began) * 1000, 1)
        out["registered_subjects"] = len(ids)
        out["registry"] = await _one_mode(bootstrap, topics["registry"], requests)
    finally:
        registry.configure(None)
        await delete_topics(bootstrap, [prefix])
    out["registry_vs_plain"] = {
        key: round(out["registry"][key] / out["plain"][key], 3)
        for key in ("encode_per_s", "produce_per_s", "consume_decode_per_s")
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
