"""The generator as a real process (``python -m generator``, tiny model) against the real Kafka.

Every check reads the output topics with a read_committed consumer: what the publisher sees.
The worker runs on the CPU with one torch thread, so its bytes do not depend on the machine's
core count. Clips are short (5 s) except in the crash tests (15-20 s, two MP3 chunks each), whose
requests must take long enough for a kill to land while the next ones are being generated.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from acesteps.dev.localstack import StackSettings
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.producer import idempotent_producer
from acesteps.messages import (
    TYPE_HEADER,
    AudioChunk,
    AudioReady,
    ChainOrigin,
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    GenerationRevoked,
    Message,
    decode,
    encode,
    headers_for,
)
from acesteps.settings import CommonSettings
from generator.jobs import effective_seed
from generator.tiny import TINY_VERSION
from tests.integration.kafkaread import eventually, partitions, read_all
from tests.integration.services import ServiceProcess

SAMPLE_RATE = 44_100
MODEL_ID = f"tiny-acestep-v{TINY_VERSION}"


class GeneratorProcess(ServiceProcess):
    """``python -m generator`` with the tiny model; log kept for failures."""

    def __init__(
        self,
        settings: CommonSettings,
        instance: str = "g1",
        *,
        module: str = "generator",
        env: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        full_env = {
            "ACESTEPS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "ACESTEPS_TOPIC_PREFIX": settings.topic_prefix,
            "ACESTEPS_GENERATOR_MODEL": "tiny",
            "ACESTEPS_GENERATOR_DEVICE": "cpu",
            "ACESTEPS_GENERATOR_TORCH_THREADS": "1",
            "ACESTEPS_GENERATOR_INSTANCE_ID": instance,
            **{f"ACESTEPS_GENERATOR_{k.upper()}": str(v) for k, v in extra.items()},
            **(env or {}),
        }
        log = StackSettings().log_dir / f"generator-{settings.topic_prefix}.log"
        super().__init__(module, full_env, log)


@pytest.fixture
def generators() -> Iterator[list[GeneratorProcess]]:
    started: list[GeneratorProcess] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
async def producer(settings: CommonSettings) -> AsyncIterator[AIOKafkaProducer]:
    client = idempotent_producer(settings.kafka_bootstrap, client_id="test-generator")
    await client.start()
    yield client
    await client.stop()


# ---------------------------------------------------------------------- helpers


def new_id() -> str:
    return "0x" + os.urandom(32).hex()


def request(**fields: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "request_id": new_id(),
        "source": "http",
        "prompt": "calm lo-fi piano",
        "tags": ("lofi", "piano"),
        "duration_s": 5,
        "seed": 1234,
        "requester": "key-test",
    }
    return GenerationRequest(**(base | fields))


async def send(producer: AIOKafkaProducer, settings: CommonSettings, *messages: Message) -> None:
    for message in messages:
        key = message.request_id  # type: ignore[attr-defined]
        await producer.send_and_wait(
            settings.topics.requests,
            value=encode(message),
            key=key.encode(),
            headers=headers_for(message),
        )


@dataclass
class Audio:
    """What a read_committed consumer sees on ``PREFIX.audio.v1``, by request id."""

    ready: dict[str, list[tuple[Any, AudioReady]]] = field(default_factory=dict)
    chunks: dict[str, list[tuple[Any, AudioChunk]]] = field(default_factory=dict)

    @classmethod
    def of(cls, records: list[Any]) -> Audio:
        audio = cls()
        for rec in records:
            kind = dict(rec.headers)[TYPE_HEADER]
            if kind == b"AudioReady":
                ready = decode(AudioReady, rec.value)
                assert rec.key == ready.request_id.encode()
                audio.ready.setdefault(ready.request_id, []).append((rec, ready))
            else:
                chunk = AudioChunk.from_record(rec.headers, rec.value)
                assert rec.key == chunk.request_id.encode()
                audio.chunks.setdefault(chunk.request_id, []).append((rec, chunk))
        return audio

    def file(self, request_id: str) -> bytes:
        """The file of ``request_id``, its chunks checked (complete, no repeats, in order)."""
        ((ready_rec, ready),) = self.ready[request_id]
        chunks = self.chunks.get(request_id, [])
        assert len(chunks) == ready.chunks, "chunk records != AudioReady.chunks"
        assert sorted(c.sequence for _, c in chunks) == list(range(ready.chunks))
        assert {c.total for _, c in chunks} == {ready.chunks}
        # Same key, same partition: the chunks come before their AudioReady.
        assert all(rec.partition == ready_rec.partition for rec, _ in chunks)
        assert all(rec.offset < ready_rec.offset for rec, _ in chunks)
        return b"".join(c.data for _, c in sorted(chunks, key=lambda rc: rc[1].sequence))


async def audio(settings: CommonSettings, isolation: str = "read_committed") -> Audio:
    return Audio.of(await read_all(settings.kafka_bootstrap, settings.topics.audio, isolation))


async def failures(settings: CommonSettings) -> dict[str, GenerationFailed]:
    records = await read_all(settings.kafka_bootstrap, settings.topics.failures)
    out: dict[str, GenerationFailed] = {}
    for rec in records:
        failed = decode(GenerationFailed, rec.value)
        assert failed.request_id not in out, f"two failures for {failed.request_id}"
        out[failed.request_id] = failed
    return out


async def consumed_all(settings: CommonSettings) -> bool:
    """Whether the generator group has committed every record of the requests topic."""
    tps = await partitions(settings.kafka_bootstrap, settings.topics.requests)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}.generator")
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    done = {tp: committed[tp].offset if tp in committed else 0 for tp in tps}
    return bool(done == ends)


async def wait_ready(
    settings: CommonSettings, ids: set[str], proc: GeneratorProcess, timeout_s: float = 60
) -> Audio:
    seen = Audio()

    async def done() -> bool:
        nonlocal seen
        assert proc.alive(), f"generator exited:\n{proc.tail()}"
        seen = await audio(settings)
        return ids <= seen.ready.keys()

    await eventually(done, timeout_s, f"AudioReady for {len(ids)} requests", interval_s=0.3)
    return seen


def assert_file(audio_: Audio, req: GenerationRequest) -> AudioReady:
    """The reassembled file is what its AudioReady says, and what the request asked for."""
    data = audio_.file(req.request_id)
    ((_, ready),) = audio_.ready[req.request_id]
    assert ready.size_bytes == len(data)
    assert ready.audio_hash == keccak256_hex(data)
    assert ready.cid == cid_of_bytes(data)
    assert (ready.format, ready.sample_rate, ready.channels) == (req.format, SAMPLE_RATE, 2)
    assert ready.duration_s == req.duration_s
    assert ready.seed == effective_seed(req)
    assert ready.model_id == MODEL_ID
    assert {"model_s", "encode_s", "hash_s"} <= ready.timings.keys()
    info = sf.info(io.BytesIO(data))
    expected_format = {"mp3": "MP3", "wav": "WAV"}[req.format]
    assert (info.format, info.samplerate, info.channels) == (expected_format, SAMPLE_RATE, 2)
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SAMPLE_RATE
    assert samples.shape == (round(req.duration_s * SAMPLE_RATE), 2)
    return ready


# ---------------------------------------------------------------------- tests


async def test_request_becomes_chunks_and_audio_ready(
    topics: CommonSettings,
    producer: AIOKafkaProducer,
    generators: list[GeneratorProcess],
) -> None:
    proc = GeneratorProcess(topics)
    generators.append(proc.start())
    mp3 = request(format="mp3", seed=1234)
    wav = request(format="wav", seed=None)  # the seed is derived from the id, and recorded
    await send(producer, topics, mp3, wav)
    seen = await wait_ready(topics, {mp3.request_id, wav.request_id}, proc)

    assert_file(seen, mp3)
    ready = assert_file(seen, wav)
    assert ready.seed == effective_seed(wav) and wav.seed is None
    # 16-bit PCM: 44-byte header + 4 bytes a frame, more than one 512 KiB chunk.
    assert ready.size_bytes == 44 + 4 * 5 * SAMPLE_RATE and ready.chunks == 2
    assert seen.ready.keys() == seen.chunks.keys() == {mp3.request_id, wav.request_id}
    assert await failures(topics) == {}
    # The advisory progress topic said each request was being generated.
    progress = await read_all(topics.kafka_bootstrap, topics.topics.progress)
    hints = [GenerationProgress.model_validate_json(r.value) for r in progress]
    assert {h.request_id for h in hints if h.stage == "generating"} == {
        mp3.request_id,
        wav.request_id,
    }
    # ... and how far its model was: the steps in order, always the last one.
    for req in (mp3, wav):
        steps = [h for h in hints if h.request_id == req.request_id and h.step is not None]
        assert steps and steps[-1].step == steps[-1].steps == 8 and steps[-1].eta_s == 0
        assert [h.step for h in steps] == sorted(h.step for h in steps)


async def test_same_request_same_bytes_other_seed_other_bytes(
    topics: CommonSettings,
    producer: AIOKafkaProducer,
    generators: list[GeneratorProcess],
) -> None:
    proc = GeneratorProcess(topics)
    generators.append(proc.start())
    first = request(seed=7, lyrics="[verse]\nhello night")
    again = first.model_copy(update={"request_id": new_id()})
    other = first.model_copy(update={"request_id": new_id(), "seed": 8})
    await send(producer, topics, first, again, other)
    seen = await wait_ready(topics, {first.request_id, again.request_id, other.request_id}, proc)

    hashes = {r.request_id: assert_file(seen, r).audio_hash for r in (first, again, other)}
    assert hashes[first.request_id] == hashes[again.request_id]
    assert hashes[other.request_id] != hashes[first.request_id]


def assert_exactly_once(after: Audio, sent: list[GenerationRequest]) -> None:
    """One AudioReady per request, exactly its chunks, and nothing else on the topic."""
    ids = {r.request_id for r in sent}
    assert after.ready.keys() == ids
    assert after.chunks.keys() == ids, "chunks of a request without AudioReady"
    for req in sent:
        assert len(after.ready[req.request_id]) == 1, "AudioReady seen twice"
        assert_file(after, req)  # exactly `chunks` chunk records, no duplicates


async def test_kill9_mid_generation_gives_each_request_exactly_once(
    topics: CommonSettings,
    producer: AIOKafkaProducer,
    generators: list[GeneratorProcess],
) -> None:
    # Two requests a transaction, 20 s clips (two MP3 chunks each, about 2 s of work each
    # here): after the first transaction the worker is busy with the next pair for seconds.
    proc = GeneratorProcess(topics, max_batch=2)
    generators.append(proc.start())
    sent = [request(duration_s=20, seed=100 + i) for i in range(6)]
    await send(producer, topics, *sent)

    async def some_committed() -> bool:
        assert proc.alive(), f"generator exited:\n{proc.tail()}"
        return len((await audio(topics)).ready) >= 2

    await eventually(some_committed, 120, "the first AudioReady records", interval_s=0.1)
    proc.kill9()
    before = await audio(topics)
    assert 2 <= len(before.ready) < len(sent), "the kill did not land mid-work"

    again = GeneratorProcess(topics, max_batch=2)  # same instance id: fences, resumes
    generators.append(again.start())
    await wait_ready(topics, {r.request_id for r in sent}, again, timeout_s=120)
    again.stop()  # nothing can be written after this: what is on the topic is final

    assert_exactly_once(await audio(topics), sent)
    assert await failures(topics) == {}


async def test_kill9_between_produce_and_commit_hides_the_written_outputs(
    topics: CommonSettings,
    producer: AIOKafkaProducer,
    generators: list[GeneratorProcess],
    tmp_path: Path,
) -> None:
    # The first worker commits its first batch, writes the second and stops before
    # committing it (tests/integration/generator_worker.py); it is killed there.
    marker = tmp_path / "paused"
    pausing = GeneratorProcess(
        topics,
        module="tests.integration.generator_worker",
        env={"GENTEST_PAUSE_AT_COMMIT": "2", "GENTEST_MARKER": str(marker)},
        max_batch=2,
    )
    generators.append(pausing.start())
    sent = [request(duration_s=15, seed=200 + i) for i in range(6)]
    await send(producer, topics, *sent)

    async def paused() -> bool:
        assert pausing.alive(), f"generator exited:\n{pausing.tail()}"
        return marker.exists()

    await eventually(paused, 120, "the worker to pause before its second commit")
    committed = await audio(topics)
    written = await audio(topics, "read_uncommitted")
    pausing.kill9()
    assert committed.ready, "the first transaction is committed"
    in_flight = written.ready.keys() - committed.ready.keys()
    assert in_flight, "the second transaction's outputs are on the broker"
    assert committed.ready.keys() <= written.ready.keys()

    # The real service, same instance id: its InitProducerId aborts the open transaction.
    again = GeneratorProcess(topics)
    generators.append(again.start())
    await wait_ready(topics, {r.request_id for r in sent}, again, timeout_s=120)
    again.stop()

    assert_exactly_once(await audio(topics), sent)
    # The aborted attempt is still in the log, invisible to read_committed, and the request
    # regenerated after the crash has the same bytes.
    everything = await audio(topics, "read_uncommitted")
    for request_id in in_flight:
        (_, aborted), (_, final) = everything.ready[request_id]
        assert aborted.audio_hash == final.audio_hash
        assert final.chunks == 2 and len(everything.chunks[request_id]) == 2 * final.chunks
    assert await failures(topics) == {}


async def test_bad_and_refused_requests_fail_and_the_worker_goes_on(
    topics: CommonSettings,
    producer: AIOKafkaProducer,
    generators: list[GeneratorProcess],
) -> None:
    proc = GeneratorProcess(topics)
    generators.append(proc.start())
    origin = ChainOrigin(
        chain_id=31337,
        contract="0x" + "ab" * 20,
        block_number=12,
        block_hash="0x" + "01" * 32,
        tx_hash="0x" + "02" * 32,
        log_index=3,
    )
    refused = request(source="chain", chain=origin, prompt="a ballad in the style of Taylor Swift")
    too_long = request(prompt=" ".join(f"w{i}" for i in range(300))[:1000])
    revoked = GenerationRevoked(
        request_id=new_id(),
        reason="reorg",
        chain_id=31337,
        contract=origin.contract,
        block_number=12,
        block_hash=origin.block_hash,
    )
    await send(producer, topics, refused, too_long, revoked)
    # Records no listener would write: not JSON, the wrong schema, a lone surrogate (valid
    # JSON, not valid Unicode), the wrong type header, and one whose key is no request id (so
    # there is no request to mark failed).
    not_json, wrong_schema, surrogate, wrong_type = new_id(), new_id(), new_id(), new_id()
    no_id = b"not-a-request-id"
    short = request(request_id=wrong_schema).model_dump(mode="json") | {"duration_s": 2}
    lone = request(request_id=surrogate).model_dump(mode="json") | {"prompt": "piano \ud800"}
    raw = [
        (not_json.encode(), b"{not json", b"GenerationRequest"),
        (wrong_schema.encode(), json.dumps(short).encode(), b"GenerationRequest"),
        (surrogate.encode(), json.dumps(lone).encode(), b"GenerationRequest"),
        (wrong_type.encode(), encode(request(request_id=wrong_type)), b"TrackPublished"),
        (no_id, b"\xff\xfe garbage", b"GenerationRequest"),
    ]
    for key, value, kind in raw:
        await producer.send_and_wait(
            topics.topics.requests, value=value, key=key, headers=[(TYPE_HEADER, kind)]
        )

    expected = {
        refused.request_id: "content_policy",
        too_long.request_id: "invalid_input",
        not_json: "invalid_record",
        wrong_schema: "invalid_record",
        surrogate: "invalid_record",
        wrong_type: "invalid_record",
    }

    async def all_failed() -> bool:
        assert proc.alive(), f"generator exited:\n{proc.tail()}"
        return expected.keys() <= (await failures(topics)).keys()

    await eventually(all_failed, 60, "the failure records", interval_s=0.3)

    # The worker is still consuming: a valid request sent now is generated.
    ok = request()
    await send(producer, topics, ok)
    assert_file(await wait_ready(topics, {ok.request_id}, proc), ok)
    # Every record was consumed (the revocation too) and nothing more will be written.
    await eventually(lambda: consumed_all(topics), 30, "the group to commit every request")
    assert proc.alive()
    proc.stop()

    failed = await failures(topics)
    assert {k: f.code for k, f in failed.items()} == expected
    assert all(f.stage == "generator" and f.retryable is False for f in failed.values())
    # A refusal says why, and keeps the origin: an on-chain request is marked failed there.
    policy = failed[refused.request_id]
    assert (policy.source, policy.chain) == ("chain", origin)
    assert "style-of" in policy.message and "Suggestion" in policy.message
    assert failed[too_long.request_id].source == "http"
    assert "too long" in failed[too_long.request_id].message
    assert "duration_s" in failed[wrong_schema].message
    assert "TrackPublished" in failed[wrong_type].message
    # Nothing was generated for them, nor for the revocation, which was skipped silently.
    assert revoked.request_id not in failed
    seen = await audio(topics)
    assert seen.ready.keys() == seen.chunks.keys() == {ok.request_id}
    # The record with no request id is kept verbatim on the dead-letter topic.
    (dead,) = await read_all(topics.kafka_bootstrap, topics.topics.deadletter)
    assert (dead.key, dead.value) == (no_id, raw[-1][1])
    assert dict(dead.headers)["dlq-code"] == b"invalid_record"
