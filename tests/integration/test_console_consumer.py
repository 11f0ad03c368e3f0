"""``scripts/stack console``: Kafka's own console consumer on a topic of the local stack, the
way to look at what is on a topic without our code (README, "Topics")."""

from __future__ import annotations

import subprocess
from pathlib import Path

from acesteps.hashing import keccak256_hex
from acesteps.kafka.producer import transactional_producer
from acesteps.kafka.records import OutRecord
from acesteps.messages import AudioChunk, GenerationRequest
from acesteps.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]


async def test_console_prints_committed_records_with_key_and_headers(
    topics: CommonSettings,
) -> None:
    request_id = keccak256_hex(b"console")
    message = GenerationRequest(request_id=request_id, source="http", requester="k", prompt="hi")
    chunk = AudioChunk(request_id=request_id, sequence=0, total=1, data=b"RIFF")
    producer = transactional_producer(topics.kafka_bootstrap, f"console-{topics.topic_prefix}")
    await producer.start()
    try:
        await producer.begin_transaction()  # read_committed: an aborted record never shows
        await (await producer.send(topics.topics.audio, key=b"x", value=b"aborted"))
        await producer.abort_transaction()
        async with producer.transaction():
            for out in (
                OutRecord.message(topics.topics.audio, request_id, message),
                OutRecord.chunk(topics.topics.audio, chunk),
            ):
                await producer.send(
                    out.topic, key=out.key, value=out.value, headers=list(out.headers)
                )
    finally:
        await producer.stop()

    lines = _console(topics.topics.audio, "--max-messages", "2")
    assert len(lines) == 2, lines
    fields = lines[0].split("\t")
    assert fields[0].startswith("Partition:") and fields[1].startswith("Offset:"), fields
    assert fields[2] == "acesteps-type:GenerationRequest"
    assert fields[3] == request_id
    assert fields[4] == message.model_dump_json()
    assert lines[1].split("\t")[2:] == [
        f"acesteps-type:AudioChunk,request-id:{request_id},sequence:0,total:1",
        request_id,
        "RIFF",
    ]


def _console(topic: str, *args: str) -> list[str]:
    command = [str(ROOT / "scripts" / "stack"), "console", topic, "--from-beginning"]
    proc = subprocess.run(
        [*command, "--timeout-ms", "30000", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()
