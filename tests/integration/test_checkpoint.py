"""`listener.sink.load_checkpoint` against the real broker: the checkpoints topic may have
been created with several partitions (by an operator, or a managed Kafka's defaults), and the
listener's checkpoint is found on whichever one it sits, the newest one winning."""

from __future__ import annotations

from acesteps.kafka.producer import idempotent_producer
from acesteps.messages import ListenerCheckpoint, encode
from acesteps.settings import CommonSettings
from listener.sink import checkpoint_key, load_checkpoint
from tests.integration.test_kafka_transactions import make_topics

CHAIN_ID = 31337
CONTRACT = "0x" + "ab" * 20


def checkpoint(block: int) -> ListenerCheckpoint:
    return ListenerCheckpoint(
        chain_id=CHAIN_ID, contract=CONTRACT, block_number=block, block_hash="0x" + "11" * 32
    )


async def test_a_checkpoint_on_any_partition_is_found(settings: CommonSettings) -> None:
    topics = settings.topics
    await make_topics(settings, "listener.checkpoints", partitions=3)
    assert await load_checkpoint(settings.kafka_bootstrap, topics, CHAIN_ID, CONTRACT) is None

    key = checkpoint_key(CHAIN_ID, CONTRACT).encode()
    other = checkpoint_key(CHAIN_ID, "0x" + "cd" * 20).encode()
    producer = idempotent_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.checkpoints, encode(checkpoint(5)), key, partition=2)
        await producer.send_and_wait(topics.checkpoints, encode(checkpoint(7)), key, partition=2)
        await producer.send_and_wait(topics.checkpoints, encode(checkpoint(9)), other, partition=1)
    finally:
        await producer.stop()

    found = await load_checkpoint(settings.kafka_bootstrap, topics, CHAIN_ID, CONTRACT)
    assert found == checkpoint(7)
