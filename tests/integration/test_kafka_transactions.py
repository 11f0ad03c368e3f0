"""Kafka transactions and the consume-transform-produce loop against the real broker.

Each test has its own topics (the ``settings`` fixture gives a fresh prefix). What is
checked: read_committed isolation of committed and aborted transactions, fencing by
transactional id, exactly-once output of `acesteps.kafka.loop` across a SIGKILL between
produce and commit, poison records and retries ending on the dead-letter topics, and the
configs `ensure_topics` applies.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import REGISTRY

from acesteps.backoff import Backoff
from acesteps.errors import PermanentError, RetryableError
from acesteps.hashing import keccak256_hex
from acesteps.kafka.admin import ensure_topics, topic_configs
from acesteps.kafka.loop import RETRIES_EXHAUSTED, LoopConfig, TransactionalLoop
from acesteps.kafka.producer import idempotent_producer, transactional_producer
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import TYPE_HEADER, GenerationFailed, GenerationRequest, decode, encode
from acesteps.settings import CommonSettings
from acesteps.topics import TopicSpec
from tests.integration.kafkaread import eventually, partitions, read_all

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ helpers


def rid(n: int | str) -> str:
    """A request id, as the HTTP listener would make one."""
    return keccak256_hex(str(n).encode())


async def make_topics(settings: CommonSettings, *suffixes: str, partitions: int = 3) -> None:
    await ensure_topics(
        settings.kafka_bootstrap,
        [TopicSpec(f"{settings.topic_prefix}.{s}", partitions, {}) for s in suffixes],
    )


async def produce_plain(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    producer = idempotent_producer(bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def group_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(await partitions(bootstrap, topic)))
    finally:
        await consumer.stop()


async def consumed_all(bootstrap: str, group: str, topic: str) -> bool:
    ends = await end_offsets(bootstrap, topic)
    committed = await group_offsets(bootstrap, group)
    return all(committed.get(tp, 0) >= end for tp, end in ends.items())


# ------------------------------------------------------------------ transactions


async def test_committed_transaction_is_read_exactly_once(settings: CommonSettings) -> None:
    await make_topics(settings, "out")
    topic = f"{settings.topic_prefix}.out"
    producer = transactional_producer(settings.kafka_bootstrap, f"{settings.topic_prefix}-t1")
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(20):
                await producer.send(topic, key=rid(i).encode(), value=b"v%d" % i)
    finally:
        await producer.stop()

    records = await read_all(settings.kafka_bootstrap, topic, "read_committed")
    assert Counter(r.value for r in records) == Counter(b"v%d" % i for i in range(20))


async def test_aborted_transaction_is_never_read_committed(settings: CommonSettings) -> None:
    await make_topics(settings, "out")
    topic = f"{settings.topic_prefix}.out"
    producer = transactional_producer(settings.kafka_bootstrap, f"{settings.topic_prefix}-t2")
    await producer.start()
    try:
        await producer.begin_transaction()
        deliveries = [
            await producer.send(topic, key=rid(i).encode(), value=b"aborted-%d" % i)
            for i in range(10)
        ]
        await asyncio.gather(*deliveries)  # written to the log, not yet committed
        await producer.abort_transaction()
        # A committed transaction after the aborted one moves the last stable offset past
        # it, so read_committed really reads over the aborted records, not just up to them.
        async with producer.transaction():
            for i in range(10):
                await producer.send(topic, key=rid(i).encode(), value=b"kept-%d" % i)
    finally:
        await producer.stop()

    committed = await read_all(settings.kafka_bootstrap, topic, "read_committed")
    assert sorted(r.value for r in committed) == sorted(b"kept-%d" % i for i in range(10))
    uncommitted = await read_all(settings.kafka_bootstrap, topic, "read_uncommitted")
    assert sorted(r.value for r in uncommitted) == sorted(
        [b"kept-%d" % i for i in range(10)] + [b"aborted-%d" % i for i in range(10)]
    )


async def test_second_producer_with_same_transactional_id_fences_the_first(
    settings: CommonSettings,
) -> None:
    await make_topics(settings, "out")
    topic = f"{settings.topic_prefix}.out"
    txn_id = f"{settings.topic_prefix}-shared"
    first = transactional_producer(settings.kafka_bootstrap, txn_id)
    second = transactional_producer(settings.kafka_bootstrap, txn_id)
    await first.start()
    try:
        await first.begin_transaction()
        await (await first.send(topic, key=b"k", value=b"zombie"))
        await second.start()  # InitProducerId: bumps the epoch, aborts first's transaction
        with pytest.raises(ProducerFenced):
            await first.commit_transaction()
        async with second.transaction():
            await producer_send(second, topic, b"successor")
    finally:
        await first.stop()
        await second.stop()

    committed = await read_all(settings.kafka_bootstrap, topic, "read_committed")
    assert [r.value for r in committed] == [b"successor"]


async def producer_send(producer: Any, topic: str, value: bytes) -> None:
    await (await producer.send(topic, key=b"k", value=value))


# ------------------------------------------------------------------ SIGKILL before commit


def kafka_worker(
    bootstrap: str, prefix: str, txn_id: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``python -m tests.integration.kafka_worker`` (its stderr in ``log``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.kafka_worker", bootstrap, prefix, txn_id, *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


async def test_sigkill_between_produce_and_commit_loses_and_duplicates_nothing(
    settings: CommonSettings, tmp_path: Path
) -> None:
    prefix, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    keys = [rid(i) for i in range(50)]
    await produce_plain(
        bootstrap, f"{prefix}.in", [(k.encode(), b"n%d" % i) for i, k in enumerate(keys)]
    )
    # The worker handles batches of at most 5 records and stops before committing the one
    # that holds the 25th record it handled: the kill lands in the middle of the work.
    marker = tmp_path / "paused-key"
    txn_id = f"{prefix}-worker-0"

    def start_worker(*extra: str) -> subprocess.Popen[bytes]:
        return kafka_worker(bootstrap, prefix, txn_id, tmp_path / f"worker{len(extra)}.log", *extra)

    first = start_worker("--pause-after", "25", "--marker", str(marker))
    try:

        async def paused() -> bool:
            assert first.poll() is None, "worker exited before reaching the pause"
            return marker.exists()

        await eventually(paused, 60, "the worker to produce the 25th record's output")
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    pause_key = marker.read_text()
    assert pause_key in keys

    # The killed transaction's output is in the log, but not committed.
    out = f"{prefix}.out"
    uncommitted = await read_all(bootstrap, out, "read_uncommitted")
    assert pause_key.encode() in {r.key for r in uncommitted}
    committed_at_kill = await read_all(bootstrap, out, "read_committed")
    assert pause_key.encode() not in {r.key for r in committed_at_kill}
    # The batches before the paused one were committed; the paused one (<= 5) was not.
    assert 20 <= len(committed_at_kill) < 25

    second = start_worker()
    try:
        await eventually(
            lambda: consumed_all(bootstrap, f"{prefix}.worker", f"{prefix}.in"),
            60,
            "the restarted worker to commit every input",
        )
        assert second.poll() is None
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    committed = await read_all(bootstrap, out, "read_committed")
    seen = Counter(r.key.decode() for r in committed)
    assert seen == Counter(keys), "every input exactly once"
    assert all(r.value == b"out:n%d" % keys.index(r.key.decode()) for r in committed)
    uncommitted = await read_all(bootstrap, out, "read_uncommitted")
    duplicates = Counter(r.key.decode() for r in uncommitted)
    assert duplicates[pause_key] >= 2, "the kill hit between produce and commit"
    assert not (await read_all(bootstrap, f"{prefix}.failures.v1", "read_committed"))


async def test_a_member_frozen_past_its_session_does_not_commit_when_it_resumes(
    settings: CommonSettings, tmp_path: Path
) -> None:
    """A zombie with another transactional id: the broker cannot fence it (no KIP-447 in
    aiokafka), so the loop itself must refuse to commit (`acesteps.kafka.membership`)."""
    prefix, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1", partitions=1)
    keys = [rid(i) for i in range(12)]
    await produce_plain(
        bootstrap, f"{prefix}.in", [(k.encode(), b"n%d" % i) for i, k in enumerate(keys)]
    )
    started = tmp_path / "started"

    def worker(name: str, *extra: str) -> subprocess.Popen[bytes]:
        return kafka_worker(bootstrap, prefix, name, tmp_path / f"{name}.log", *extra)

    # A handles 5 records a batch, 1 s each: frozen 1.5 s into its first batch.
    zombie = worker(f"{prefix}-a", "--handle-ms", "1000", "--marker", str(started))
    other: subprocess.Popen[bytes] | None = None
    try:

        async def busy() -> bool:
            assert zombie.poll() is None, (tmp_path / f"{prefix}-a.log").read_text()
            return started.exists()

        await eventually(busy, 60, "the first worker to start on a batch")
        await asyncio.sleep(1.5)
        zombie.send_signal(signal.SIGSTOP)
        # B (another instance id) gets the partition once A's session (6 s) has expired, and
        # handles every record, A's batch included.
        other = worker(f"{prefix}-b")
        await eventually(
            lambda: consumed_all(bootstrap, f"{prefix}.worker", f"{prefix}.in"),
            60,
            "the second worker to commit every input",
        )
        zombie.send_signal(signal.SIGCONT)  # A finishes its batch and would commit it

        async def refused() -> bool:
            return "not committing" in (tmp_path / f"{prefix}-a.log").read_text()

        await eventually(refused, 30, "the resumed worker to refuse its commit")
        for proc in (zombie, other):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        for proc in (zombie, other):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    committed = await read_all(bootstrap, f"{prefix}.out", "read_committed")
    assert Counter(r.key.decode() for r in committed) == Counter(keys), "each input once"
    assert "stood still" in (tmp_path / f"{prefix}-a.log").read_text()


# ------------------------------------------------------------------ the loop in process


def request(n: int, key: str | None = None) -> GenerationRequest:
    return GenerationRequest(
        request_id=key or rid(n),
        source="http",
        prompt=f"song {n}",
        duration_s=10,
        requester="key-1",
    )


def loop_config(settings: CommonSettings, **overrides: Any) -> LoopConfig:
    p = settings.topic_prefix
    values: dict[str, Any] = {
        "bootstrap": settings.kafka_bootstrap,
        "group_id": f"{p}.loop",
        "transactional_id": f"{p}-loop-0",
        "topics": (f"{p}.in",),
        "failures_topic": f"{p}.failures.v1",
        "deadletter_topic": f"{p}.deadletter.v1",
        "stage": "generator",
        "poll_timeout_ms": 200,
        "max_attempts": 4,
        "backoff": Backoff(initial_s=0.05, factor=2, max_s=0.2),
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
    } | overrides
    return LoopConfig(**values)


async def run_until_consumed(settings: CommonSettings, loop: TransactionalLoop[Any]) -> None:
    """Run ``loop`` until its group has committed every input, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:

        async def done() -> bool:
            if task.done():
                task.result()  # surfaces the loop's exception
                raise AssertionError("the loop stopped by itself")
            return await consumed_all(
                settings.kafka_bootstrap, loop.config.group_id, loop.config.topics[0]
            )

        await eventually(done, 60, "the loop to commit every input")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def echo(record: InRecord, deps: str) -> Sequence[OutRecord]:
    req = decode_value(GenerationRequest, record)
    return [OutRecord(deps, record.key, req.prompt.encode())]


async def test_loop_dead_letters_poison_and_processes_the_rest(settings: CommonSettings) -> None:
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    good = [request(i) for i in range(6)]
    wrong_schema = request(100).model_dump(mode="json") | {"duration_s": 9999}
    await produce_plain(
        bootstrap,
        f"{p}.in",
        [
            (good[0].request_id.encode(), encode(good[0])),
            (rid("bad-json").encode(), b"{not json"),
            (good[1].request_id.encode(), encode(good[1])),
            (rid("bad-schema").encode(), json.dumps(wrong_schema).encode()),
            (rid("tombstone").encode(), None),
            (b"not-a-request-id", b"\xff\xfe garbage"),
            (None, b"{}"),
            *[(g.request_id.encode(), encode(g)) for g in good[2:]],
        ],
    )
    loop = TransactionalLoop(loop_config(settings), echo, f"{p}.out")
    await run_until_consumed(settings, loop)

    outputs = await read_all(bootstrap, f"{p}.out", "read_committed")
    assert Counter(r.key.decode() for r in outputs) == Counter(g.request_id for g in good)

    failures = await read_all(bootstrap, f"{p}.failures.v1", "read_committed")
    by_id = {r.key.decode(): decode(GenerationFailed, r.value) for r in failures}
    assert len(failures) == len(by_id) == 3
    assert set(by_id) == {rid("bad-json"), rid("bad-schema"), rid("tombstone")}
    for failed in by_id.values():
        assert failed.code == "invalid_record"
        assert failed.stage == "generator"
        assert failed.retryable is False
    assert "Invalid JSON" in by_id[rid("bad-json")].message
    assert "duration_s" in by_id[rid("bad-schema")].message
    assert "tombstone" in by_id[rid("tombstone")].message
    assert all(dict(r.headers)[TYPE_HEADER] == b"GenerationFailed" for r in failures)

    # No request id to fail: the records themselves, with where they came from and why.
    dead = await read_all(bootstrap, f"{p}.deadletter.v1", "read_committed")
    assert sorted(((r.key, r.value) for r in dead), key=repr) == sorted(
        [(b"not-a-request-id", b"\xff\xfe garbage"), (None, b"{}")], key=repr
    )
    for r in dead:
        headers = dict(r.headers)
        assert headers["dlq-topic"] == f"{p}.in".encode()
        assert headers["dlq-code"] == b"invalid_record"
        assert int(headers["dlq-offset"]) >= 0


async def test_loop_retries_then_succeeds_once(settings: CommonSettings) -> None:
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    flaky, steady = request(1), request(2)
    calls: Counter[str] = Counter()

    async def handle(record: InRecord, out: str) -> Sequence[OutRecord]:
        req = decode_value(GenerationRequest, record)
        calls[req.request_id] += 1
        if req.request_id == flaky.request_id and calls[req.request_id] <= 2:
            raise RetryableError("IPFS is not answering")
        return [OutRecord(out, record.key, b"ok")]

    await produce_plain(
        bootstrap, f"{p}.in", [(r.request_id.encode(), encode(r)) for r in (flaky, steady)]
    )
    await run_until_consumed(settings, TransactionalLoop(loop_config(settings), handle, f"{p}.out"))

    outputs = await read_all(bootstrap, f"{p}.out", "read_committed")
    assert Counter(r.key.decode() for r in outputs) == Counter(
        [flaky.request_id, steady.request_id]
    )
    assert calls[flaky.request_id] == 3
    assert calls[steady.request_id] == 1, "a record handled before the retry is not redone"
    assert not await read_all(bootstrap, f"{p}.failures.v1", "read_committed")


async def test_loop_gives_up_after_max_attempts(settings: CommonSettings) -> None:
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    doomed, fine = request(1), request(2)
    calls: Counter[str] = Counter()

    class RefusedError(PermanentError):
        code = "content_refused"

    async def handle(record: InRecord, out: str) -> Sequence[OutRecord]:
        req = decode_value(GenerationRequest, record)
        calls[req.request_id] += 1
        if req.request_id == doomed.request_id:
            raise RetryableError("GPU out of memory")
        if req.prompt == "refuse me":
            raise RefusedError("asks for a named artist's voice")
        return [OutRecord(out, record.key, b"ok")]

    refused = request(3).model_copy(update={"prompt": "refuse me"})
    await produce_plain(
        bootstrap,
        f"{p}.in",
        [(r.request_id.encode(), encode(r)) for r in (doomed, fine, refused)],
    )
    config = loop_config(settings, max_attempts=3)
    await run_until_consumed(settings, TransactionalLoop(config, handle, f"{p}.out"))

    assert calls[doomed.request_id] == 3
    failures = await read_all(bootstrap, f"{p}.failures.v1", "read_committed")
    by_id = {r.key.decode(): decode(GenerationFailed, r.value) for r in failures}
    assert len(failures) == 2
    assert by_id[doomed.request_id].code == RETRIES_EXHAUSTED
    assert "GPU out of memory" in by_id[doomed.request_id].message
    assert by_id[refused.request_id].code == "content_refused"
    outputs = await read_all(bootstrap, f"{p}.out", "read_committed")
    assert [r.key.decode() for r in outputs] == [fine.request_id]


async def test_loop_retries_a_failed_transaction_until_it_commits_once(
    settings: CommonSettings,
) -> None:
    """A broker-side failure aborts the batch's transaction; the batch is redone, not lost.

    The output topic first refuses records over 2,000 bytes, so every delivery fails and
    every transaction aborts; once the limit is raised the next attempt commits.
    """
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "failures.v1", "deadletter.v1")
    await ensure_topics(bootstrap, [TopicSpec(f"{p}.out", 1, {"max.message.bytes": "2000"})])
    reqs = [request(i) for i in range(3)]
    calls: Counter[str] = Counter()

    async def handle(record: InRecord, out: str) -> Sequence[OutRecord]:
        calls[decode_value(GenerationRequest, record).request_id] += 1
        return [OutRecord(out, record.key, b"x" * 3_000)]

    await produce_plain(bootstrap, f"{p}.in", [(r.request_id.encode(), encode(r)) for r in reqs])
    loop = TransactionalLoop(loop_config(settings), handle, f"{p}.out")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:

        async def failed_thrice() -> bool:
            assert not task.done(), "the loop stopped"
            return any(n >= 3 for n in calls.values())

        await eventually(failed_thrice, 30, "three failed transactions")
        assert not await read_all(bootstrap, f"{p}.out", "read_uncommitted")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC, f"{p}.out", {"max.message.bytes": "1048588"}
                    )
                ]
            )
        finally:
            await admin.close()
        await eventually(
            lambda: consumed_all(bootstrap, loop.config.group_id, f"{p}.in"),
            30,
            "the loop to commit every input",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    outputs = await read_all(bootstrap, f"{p}.out", "read_committed")
    assert Counter(r.key.decode() for r in outputs) == Counter(r.request_id for r in reqs)
    assert not await read_all(bootstrap, f"{p}.failures.v1", "read_committed")


async def test_fenced_loop_stops_without_committing(settings: CommonSettings) -> None:
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    entered, release = asyncio.Event(), asyncio.Event()

    async def handle(record: InRecord, out: str) -> Sequence[OutRecord]:
        entered.set()
        await release.wait()
        return [OutRecord(out, record.key, b"from the zombie")]

    req = request(1)
    await produce_plain(bootstrap, f"{p}.in", [(req.request_id.encode(), encode(req))])
    config = loop_config(settings)
    task = asyncio.create_task(TransactionalLoop(config, handle, f"{p}.out").run())
    successor = transactional_producer(bootstrap, config.transactional_id)
    try:
        await asyncio.wait_for(entered.wait(), 30)
        await successor.start()  # another process took the id: the loop is now a zombie
        release.set()
        with pytest.raises(ProducerFenced):
            await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        await successor.stop()

    assert not await read_all(bootstrap, f"{p}.out", "read_committed")
    assert not await group_offsets(bootstrap, config.group_id)


async def test_cancelled_loop_commits_nothing_and_a_restart_finishes(
    settings: CommonSettings,
) -> None:
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1")
    entered = asyncio.Event()
    block = True

    async def handle(record: InRecord, out: str) -> Sequence[OutRecord]:
        entered.set()
        if block:
            await asyncio.Event().wait()
        return [OutRecord(out, record.key, b"done")]

    reqs = [request(i) for i in range(5)]
    await produce_plain(bootstrap, f"{p}.in", [(r.request_id.encode(), encode(r)) for r in reqs])
    loop = TransactionalLoop(loop_config(settings), handle, f"{p}.out")
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert not await group_offsets(bootstrap, loop.config.group_id)
    assert not await read_all(bootstrap, f"{p}.out", "read_uncommitted")

    block = False
    await run_until_consumed(settings, TransactionalLoop(loop.config, handle, f"{p}.out"))
    outputs = await read_all(bootstrap, f"{p}.out", "read_committed")
    assert Counter(r.key.decode() for r in outputs) == Counter(r.request_id for r in reqs)


# ------------------------------------------------------------------ topics


async def test_ensure_topics_creates_the_specs_idempotently(settings: CommonSettings) -> None:
    specs = settings.topics.specs(partitions=2)
    await ensure_topics(settings.kafka_bootstrap, specs)
    await ensure_topics(settings.kafka_bootstrap, specs)  # exists already: no error

    checkpoint = await topic_configs(settings.kafka_bootstrap, settings.topics.checkpoints)
    assert checkpoint["cleanup.policy"] == "compact"
    requests = await topic_configs(settings.kafka_bootstrap, settings.topics.requests)
    assert requests["cleanup.policy"] == "delete"
    assert requests["retention.ms"] == str(7 * 24 * 3600 * 1000)
    ends = await end_offsets(settings.kafka_bootstrap, settings.topics.requests)
    assert len(ends) == 2


async def test_ensure_topics_reports_how_existing_topics_differ(settings: CommonSettings) -> None:
    shaped = settings.with_overrides(
        kafka_partitions=2, kafka_topics={"audio": {"partitions": 3, "min_insync_replicas": 1}}
    )
    specs = shaped.topic_specs()
    assert await ensure_topics(settings.kafka_bootstrap, specs) == []  # created as asked
    assert len(await end_offsets(settings.kafka_bootstrap, settings.topics.audio)) == 3
    assert (await topic_configs(settings.kafka_bootstrap, settings.topics.audio))[
        "min.insync.replicas"
    ] == "1"
    assert await ensure_topics(settings.kafka_bootstrap, specs) == []  # as asked: nothing

    wider = settings.with_overrides(kafka_partitions=4, kafka_min_insync_replicas=1)
    mismatches = await ensure_topics(settings.kafka_bootstrap, wider.topic_specs())
    requests = settings.topics.requests
    assert f"topic {requests} exists with 2 partitions, spec 4" in mismatches
    assert f"topic {settings.topics.audio} exists with 3 partitions, spec 4" in mismatches
    assert not any("min.insync.replicas" in m for m in mismatches), "the broker's is 1"
    assert len(await end_offsets(settings.kafka_bootstrap, requests)) == 2, "left as it is"


async def test_a_replication_factor_the_cluster_cannot_give_is_refused_clearly(
    settings: CommonSettings,
) -> None:
    three = settings.with_overrides(kafka_replication_factor=3)
    with pytest.raises(KafkaError, match="replication factor 3"):
        await ensure_topics(settings.kafka_bootstrap, three.topic_specs())


async def test_the_loop_exports_how_far_behind_it_is(settings: CommonSettings) -> None:
    p, bootstrap = settings.topic_prefix, settings.kafka_bootstrap
    await make_topics(settings, "in", "out", "failures.v1", "deadletter.v1", partitions=1)
    reqs = [request(i) for i in range(30)]
    await produce_plain(bootstrap, f"{p}.in", [(r.request_id.encode(), encode(r)) for r in reqs])
    go_on = asyncio.Event()

    async def held(record: InRecord, deps: str) -> Sequence[OutRecord]:
        await go_on.wait()
        return await echo(record, deps)

    loop = TransactionalLoop(loop_config(settings, max_records=5), held, f"{p}.out")
    labels = {"group": loop.config.group_id, "topic": f"{p}.in", "partition": "0"}

    def lag() -> float | None:
        return REGISTRY.get_sample_value("acesteps_consumer_lag_records", labels)

    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:

        async def behind() -> bool:
            return lag() == 25  # five records handed out, held by the handler

        await eventually(behind, 30, "the lag of the first batch")
        go_on.set()

        async def caught_up() -> bool:
            return lag() == 0

        await eventually(caught_up, 30, "no lag once every record is read")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
