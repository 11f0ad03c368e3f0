"""The pure logic of the consume loop: dead letters, decoding, back-off, record outcomes.

The batch handling of `TransactionalLoop` (which records are committed, where the consumer
seeks back, when a record is given up) runs here without a broker: ``_handle`` calls only
the handler. The transaction around it is tested against Kafka in
``tests/integration/test_kafka_transactions.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from hypothesis import given
from hypothesis import strategies as st

from acesteps.backoff import Backoff
from acesteps.errors import (
    AceStepsError,
    InvalidRecordError,
    PermanentError,
    RetryableError,
    UnavailableError,
)
from acesteps.hashing import keccak256_hex
from acesteps.kafka.loop import RETRIES_EXHAUSTED, LoopConfig, TransactionalLoop
from acesteps.kafka.records import (
    MAX_REQUEST_SIZE,
    InRecord,
    OutRecord,
    dead_letter,
    decode_value,
    request_id_of,
)
from acesteps.kafka.transactions import is_fatal
from acesteps.messages import (
    TYPE_HEADER,
    AudioChunk,
    GenerationFailed,
    GenerationRequest,
    decode,
    encode,
)

RID = keccak256_hex(b"request")


def rec(
    value: bytes | None = b"{}",
    key: bytes | None = RID.encode(),
    *,
    topic: str = "p.in",
    partition: int = 0,
    offset: int = 7,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> InRecord:
    return InRecord(topic, partition, offset, key, value, headers)


def letter(record: InRecord, code: str = "boom", message: str = "it broke") -> OutRecord:
    return dead_letter(
        record,
        stage="publisher",
        code=code,
        message=message,
        failures_topic="p.failures.v1",
        deadletter_topic="p.deadletter.v1",
    )


# ------------------------------------------------------------------ request ids


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (RID.encode(), RID),
        (RID.upper().replace("0X", "0x").encode(), None),  # ids are lower-case hex
        (RID[:-1].encode(), None),
        ((RID + "0").encode(), None),
        (RID.encode() + b"\n", None),
        (b"", None),
        (None, None),
    ],
)
def test_request_id_of(key: bytes | None, expected: str | None) -> None:
    assert request_id_of(key) == expected


# ------------------------------------------------------------------ dead letters


def test_keyed_record_becomes_generation_failed() -> None:
    out = letter(rec(b"garbage", offset=42), code="hash_mismatch", message="wrong hash")
    assert out.topic == "p.failures.v1"
    assert out.key == RID.encode()
    failed = decode(GenerationFailed, out.value)
    assert (failed.request_id, failed.stage, failed.code) == (RID, "publisher", "hash_mismatch")
    assert failed.retryable is False
    assert failed.message.startswith("wrong hash") and "p.in/0@42" in failed.message
    headers = dict(out.headers)
    assert headers[TYPE_HEADER] == b"GenerationFailed"
    assert headers["dlq-offset"] == b"42"
    assert headers["dlq-code"] == b"hash_mismatch"


def test_unkeyed_record_is_kept_raw_with_its_headers() -> None:
    original = rec(b"\x00\xff raw", key=b"chain:1", headers=(("acesteps-type", b"X"),))
    out = letter(original)
    assert out.topic == "p.deadletter.v1"
    assert (out.key, out.value) == (b"chain:1", b"\x00\xff raw")
    assert out.headers[0] == ("acesteps-type", b"X")
    headers = dict(out.headers)
    assert headers["dlq-topic"] == b"p.in"
    assert headers["dlq-partition"] == b"0"
    assert headers["dlq-stage"] == b"publisher"
    assert headers["dlq-message"] == b"it broke"


@pytest.mark.parametrize("code", ["Not A Code!", "trailing\n", "", "x" * 65])
def test_invalid_code_falls_back_and_keeps_it_in_the_message(code: str) -> None:
    out = letter(rec(), code=code)
    assert out.topic == "p.failures.v1"
    failed = decode(GenerationFailed, out.value)
    assert failed.code == PermanentError.code
    assert failed.message.startswith(f"[{code[:64]}] it broke")


@given(st.text(max_size=20_000) | st.just("bad byte \udcff from surrogateescape"))
def test_any_message_fits_generation_failed(message: str) -> None:
    out = letter(rec(), message=message)
    failed = decode(GenerationFailed, out.value)
    assert len(failed.message) <= 4_000
    assert len(dict(out.headers)["dlq-message"]) <= 1_000


def test_oversized_raw_copy_drops_the_value_but_fits() -> None:
    big = rec(b"x" * (MAX_REQUEST_SIZE - 100), key=None)
    out = letter(big)
    assert out.size_estimate() <= MAX_REQUEST_SIZE
    assert out.value is None
    assert dict(out.headers)["dlq-dropped"].startswith(b"value")
    assert dict(out.headers)["dlq-offset"] == b"7"


def test_out_record_builders() -> None:
    req = GenerationRequest(request_id=RID, source="http", prompt="a", duration_s=5, requester="k")
    out = OutRecord.message("p.requests.v1", RID, req)
    assert (out.key, dict(out.headers)[TYPE_HEADER]) == (RID.encode(), b"GenerationRequest")
    assert decode(GenerationRequest, out.value) == req
    chunk = AudioChunk(request_id=RID, sequence=1, total=2, data=b"abc")
    out = OutRecord.chunk("p.audio.v1", chunk)
    assert out.value == b"abc"
    assert AudioChunk.from_record(out.headers, out.value) == chunk


# ------------------------------------------------------------------ decoding


def test_decode_value_refuses_another_type() -> None:
    req = GenerationRequest(request_id=RID, source="http", prompt="a", duration_s=5, requester="k")
    good = rec(encode(req), headers=((TYPE_HEADER, b"GenerationRequest"),))
    assert decode_value(GenerationRequest, good) == req
    with pytest.raises(InvalidRecordError, match="TrackPublished"):
        decode_value(
            GenerationRequest, rec(encode(req), headers=((TYPE_HEADER, b"TrackPublished"),))
        )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"{oops", "Invalid JSON"),
        (b'{"request_id": "0x12"}', "request_id"),
        (None, "tombstone"),
        (b"\xff\xfe", "Invalid JSON"),
    ],
)
def test_decode_value_errors_are_permanent(value: bytes | None, fragment: str) -> None:
    with pytest.raises(InvalidRecordError, match=fragment) as caught:
        decode_value(GenerationRequest, rec(value))
    assert caught.value.code == "invalid_record"


def test_error_codes_are_checked_at_class_creation() -> None:
    with pytest.raises(TypeError, match="does not match"):

        class BadError(PermanentError):
            code = "Bad Code"

    class GoodError(RetryableError):
        code = "ipfs_unavailable"

    assert issubclass(GoodError, AceStepsError)


# ------------------------------------------------------------------ back-off


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, factor=2, max_s=5)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 5, 5]
    assert backoff.delay(10**6) == 5  # no overflow, however long the outage


@given(
    attempt=st.integers(1, 200),
    jitter=st.floats(0, 1),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_jitter_stays_within_bounds(attempt: int, jitter: float, draw: float) -> None:
    plain = Backoff(initial_s=0.1, factor=3, max_s=20)
    jittered = Backoff(initial_s=0.1, factor=3, max_s=20, jitter=jitter)
    full = plain.delay(attempt)
    delay = jittered.delay(attempt, rand=lambda: draw)
    assert (1 - jitter) * full - 1e-9 <= delay <= full <= 20


@pytest.mark.parametrize(
    "kwargs", [{"initial_s": 0}, {"initial_s": 5, "max_s": 1}, {"factor": 0.5}, {"jitter": 2}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


# ------------------------------------------------------------------ batch outcomes


def make_loop(handler, max_attempts: int = 3, **overrides) -> TransactionalLoop[None]:  # type: ignore[no-untyped-def]
    config = LoopConfig(
        bootstrap="127.0.0.1:1",
        group_id="g",
        transactional_id="t",
        topics=("p.in",),
        failures_topic="p.failures.v1",
        deadletter_topic="p.deadletter.v1",
        stage="generator",
        max_attempts=max_attempts,
        backoff=Backoff(initial_s=1, factor=2, max_s=60),
        **overrides,
    )
    return TransactionalLoop(config, handler, None)


def batch(*spec: tuple[int, int, str]) -> list[InRecord]:
    """Records (partition, offset, behaviour) keyed by request ids."""
    return [
        rec(b.encode(), key=keccak256_hex(b"%d" % o).encode(), partition=p, offset=o)
        for p, o, b in spec
    ]


async def behaving(record: InRecord, deps: None) -> Sequence[OutRecord]:
    match (record.value or b"").decode():
        case "ok":
            return [OutRecord("p.out", record.key, b"done")]
        case "retry":
            raise RetryableError("dependency down")
        case "outage":
            raise UnavailableError("IPFS is down")
        case "refuse":
            raise PermanentError("refused")
        case "invalid":
            raise ValueError("no such field")
        case "bug":
            raise KeyError("oops")
        case "huge":
            return [OutRecord("p.out", record.key, b"x" * MAX_REQUEST_SIZE)]
        case "slow":
            await asyncio.sleep(10)
            return []
    raise AssertionError(record)


async def test_retry_commits_the_records_before_and_rewinds_the_rest() -> None:
    loop = make_loop(behaving)
    records = batch((0, 10, "ok"), (0, 11, "retry"), (0, 12, "ok"), (1, 5, "ok"))
    done = await loop._handle(records)
    assert [o.value for o in done.outputs] == [b"done"]
    assert done.offsets == {TopicPartition("p.in", 0): 11}
    assert done.rewind == {TopicPartition("p.in", 0): 11, TopicPartition("p.in", 1): 5}
    assert done.retry_in == 1


async def test_retries_back_off_then_dead_letter() -> None:
    loop = make_loop(behaving, max_attempts=3)
    (record,) = batch((2, 9, "retry"))
    delays = [(await loop._handle([record])).retry_in for _ in range(2)]
    assert delays == [1, 2]
    done = await loop._handle([record])
    assert done.retry_in is None and done.rewind == {}
    assert done.offsets == {TopicPartition("p.in", 2): 10}
    (out,) = done.outputs
    failed = decode(GenerationFailed, out.value)
    assert failed.code == RETRIES_EXHAUSTED
    assert "3 attempts" in failed.message and "dependency down" in failed.message
    # The count starts again for a record that comes back (a replay, another batch).
    assert (await loop._handle([record])).retry_in == 1


async def test_an_outage_is_retried_for_as_long_as_it_lasts() -> None:
    loop = make_loop(behaving, max_attempts=2)
    (record,) = batch((0, 3, "outage"))
    delays = [(await loop._handle([record])).retry_in for _ in range(10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]  # capped, never dead-lettered


async def test_unexpected_errors_are_retried_too() -> None:
    loop = make_loop(behaving, max_attempts=2)
    (record,) = batch((0, 1, "bug"))
    assert (await loop._handle([record])).retry_in == 1
    (out,) = (await loop._handle([record])).outputs
    assert decode(GenerationFailed, out.value).code == RETRIES_EXHAUSTED


async def test_permanent_and_invalid_records_are_dead_lettered_in_place() -> None:
    loop = make_loop(behaving)
    records = batch((0, 1, "refuse"), (0, 2, "invalid"), (0, 3, "huge"), (0, 4, "ok"))
    done = await loop._handle(records)
    assert done.retry_in is None
    assert done.offsets == {TopicPartition("p.in", 0): 5}
    codes = [
        decode(GenerationFailed, o.value).code for o in done.outputs if o.topic == "p.failures.v1"
    ]
    assert codes == ["permanent_error", "invalid_record", "output_too_large"]
    assert Counter(o.topic for o in done.outputs) == {"p.failures.v1": 3, "p.out": 1}


async def test_handler_timeout_is_retryable() -> None:
    loop = make_loop(behaving, handler_timeout_s=0.01)
    done = await loop._handle(batch((0, 1, "slow")))
    assert done.retry_in == 1 and done.outputs == []


def test_fencing_is_recognised_through_the_exception_chain() -> None:
    try:
        try:
            raise ProducerFenced()
        except ProducerFenced as exc:
            raise KafkaError("Unexpected error during batch delivery") from exc
    except KafkaError as wrapped:
        assert is_fatal(wrapped)
    looped = KafkaError("a")
    looped.__context__ = KafkaError("b")
    looped.__context__.__context__ = looped  # a cycle must not hang the check
    assert not is_fatal(looped)
