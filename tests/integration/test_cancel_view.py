"""`acesteps.cancels.CancelView` on the real Kafka: what `caught_up` promises."""

from __future__ import annotations

from acesteps.cancels import CancelView
from acesteps.hashing import keccak256_hex
from acesteps.kafka.admin import ensure_topics
from acesteps.kafka.producer import idempotent_producer, send_message, transactional_producer
from acesteps.kafka.records import OutRecord
from acesteps.messages import CancelRequested, GenerationCanceled
from acesteps.settings import CommonSettings


def cancel(n: int) -> CancelRequested:
    return CancelRequested(request_id=keccak256_hex(str(n).encode()), reason="requested", by="k")


async def test_a_cancel_acknowledged_before_caught_up_is_seen_after_it(
    settings: CommonSettings,
) -> None:
    bootstrap, topic = settings.kafka_bootstrap, settings.topics.cancels
    await ensure_topics(bootstrap, settings.topics.specs(partitions=3))
    producer = idempotent_producer(bootstrap)
    await producer.start()
    before = cancel(0)
    await (await send_message(producer, topic, before.request_id, before))
    view = CancelView(bootstrap, topic)
    await view.start()  # reads what was there
    try:
        assert view.get(before.request_id) == before
        for n in range(1, 30):
            later = cancel(n)
            await (await send_message(producer, topic, later.request_id, later))
            await view.caught_up(timeout_s=10)
            assert view.get(later.request_id) == later, n
        # Transactions leave markers that no record shows: caught_up still returns, and
        # another record type on the topic is skipped.
        txn = transactional_producer(bootstrap, f"{settings.topic_prefix}.cancel-test")
        await txn.start()
        try:
            last = cancel(99)
            other = GenerationCanceled(
                request_id=last.request_id, stage="generator", reason="requested", message="x"
            )
            await txn.begin_transaction()
            for out in (OutRecord.message(topic, last.request_id, last),) * 2 + (
                OutRecord.message(topic, other.request_id, other),
            ):
                await txn.send_and_wait(
                    out.topic, out.value, key=out.key, headers=list(out.headers)
                )
            await txn.commit_transaction()
        finally:
            await txn.stop()
        await view.caught_up(timeout_s=10)
        assert view.get(last.request_id) == last
        assert view.get(cancel(1000).request_id) is None
    finally:
        await view.stop()
        await producer.stop()
