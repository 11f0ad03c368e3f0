"""Schema registry mode against a real registry: Apicurio Registry's Confluent API, started by
``scripts/stack registry up`` (and stopped after this module when it was started here).

What is checked: values written in the Confluent wire format under the schema id the registry
gave each record's subject (``acesteps.<Record>``), the registered schema being the exported
one (so a consumer in another language can fetch it by the id and validate the JSON), plain
and framed values read alike on one topic, and the whole service running in the mode: an HTTP
request through listener, generator and publisher, every record it left framed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from acesteps import schemas
from acesteps.hashing import keccak256_hex
from acesteps.kafka import schema_registry as registry
from acesteps.kafka.producer import idempotent_producer, send_message
from acesteps.kafka.records import InRecord, decode_value
from acesteps.messages import (
    MESSAGE_TYPES,
    TYPE_HEADER,
    GenerationRequest,
    GenerationRevoked,
    json_of,
)
from acesteps.settings import CommonSettings
from tests.integration.kafkaread import read_all
from tests.integration.pipeline import Pipeline, running_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "stack"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    """The stack's registry, started unless it runs; stopped afterwards if started here."""
    was_up = _stack("registry", "status").returncode == 0
    started = _stack("registry", "up")
    assert started.returncode == 0, f"scripts/stack registry up:\n{started.stderr[-3000:]}"
    line = _stack("registry", "env").stdout.strip()
    url = line.removeprefix("export ACESTEPS_SCHEMA_REGISTRY_URL=")
    try:
        yield url
    finally:
        registry.configure(None)
        if not was_up:
            _stack("registry", "down")


@pytest.fixture
def registry_mode(registry_url: str) -> Iterator[dict[str, int]]:
    """This process writes in the registry's wire format while the test runs."""
    ids = registry.configure(registry_url)
    try:
        yield ids
    finally:
        registry.configure(None)


def _schema_id(value: bytes) -> int:
    assert value[:1] == b"\x00", value[:20]
    return int.from_bytes(value[1:5], "big")


def rid(n: int) -> str:
    return keccak256_hex(f"registry {n}".encode())


async def test_values_round_trip_through_the_registry(
    topics: CommonSettings, registry_url: str, registry_mode: dict[str, int]
) -> None:
    ids = registry_mode
    assert set(ids) == set(MESSAGE_TYPES)
    client = registry.SchemaRegistry(registry_url)
    assert {registry.subject(name) for name in MESSAGE_TYPES} <= set(client.subjects())
    # Registering again (another instance starting) gives the same ids.
    assert registry.configure(registry_url) == ids

    topic = topics.topics.requests
    framed = GenerationRequest(request_id=rid(1), source="http", requester="k", prompt="one")
    revoked = GenerationRevoked(
        request_id=rid(2),
        reason="reorg",
        chain_id=31337,
        contract="0x" + "11" * 20,
        block_number=7,
        block_hash="0x" + "22" * 32,
    )
    plain = GenerationRequest(request_id=rid(3), source="http", requester="k", prompt="three")
    producer = idempotent_producer(topics.kafka_bootstrap)
    await producer.start()
    try:
        await (await send_message(producer, topic, framed.request_id, framed))
        await (await send_message(producer, topic, revoked.request_id, revoked))
        registry.configure(None)  # a producer still writing plain JSON, on the same topic
        await (await send_message(producer, topic, plain.request_id, plain))
    finally:
        await producer.stop()

    found = {r.key: InRecord.of(r) for r in await read_all(topics.kafka_bootstrap, topic)}
    first, second, third = (found[m.request_id.encode()] for m in (framed, revoked, plain))
    assert third.value is not None and third.value.startswith(b"{")
    for record, message in ((first, framed), (second, revoked)):
        assert record.value is not None
        name = type(message).__name__
        assert record.header(TYPE_HEADER) == name.encode()
        schema_id = _schema_id(record.value)
        assert schema_id == ids[name]
        # What a consumer in another language does: fetch the schema by id, validate.
        registered = client.schema(schema_id)
        assert registered.get("schemaType", "JSON") == "JSON"
        schema = json.loads(registered["schema"])
        assert schema == schemas.current()[name]
        Draft202012Validator(schema).validate(json.loads(json_of(record.value)))
        assert decode_value(type(message), record) == message
    assert decode_value(GenerationRequest, third) == plain


async def test_the_whole_service_in_registry_mode(stack: CommonSettings, registry_url: str) -> None:
    common = {"ACESTEPS_SCHEMA_REGISTRY_URL": registry_url}
    with running_pipeline(stack, common=common) as pipeline:
        record = await _generate(pipeline)
    assert record["status"] == "completed", record
    seen: dict[str, int] = {}
    for kind in ("requests", "audio", "tracks", "progress"):
        for raw in await read_all(stack.kafka_bootstrap, f"{pipeline.prefix}.{kind}.v1"):
            got = InRecord.of(raw)
            name = (got.header(TYPE_HEADER) or b"").decode()
            if name == "AudioChunk":
                continue  # raw bytes in both modes
            assert got.value is not None and name in MESSAGE_TYPES, (kind, name)
            assert _schema_id(got.value) == registry.SchemaRegistry(registry_url).register(
                registry.subject(name), schemas.render()[f"{name}.json"]
            )
            decode_value(MESSAGE_TYPES[name], got)
            seen[name] = seen.get(name, 0) + 1
    for name in ("GenerationRequest", "AudioReady", "TrackPublished", "GenerationProgress"):
        assert seen.get(name), (name, seen)


async def _generate(pipeline: Pipeline) -> dict[str, object]:
    body = {"prompt": "a calm piano piece", "duration": 5, "seed": 5}
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(f"{pipeline.api_url}/api/generate", json=body) as answer:
            assert answer.status == 200, (await answer.text(), pipeline.logs())
            result: dict[str, object] = await answer.json()
            return result


def test_an_unreachable_or_wrong_registry_is_an_error(registry_url: str) -> None:
    with pytest.raises(registry.RegistryError, match="HTTP 404"):
        registry.configure(registry_url.removesuffix("/apis/ccompat/v7") + "/no/such/api")
    with pytest.raises(registry.RegistryError, match="refused"):
        registry.configure("http://127.0.0.1:1/apis/ccompat/v7", timeout_s=2)
    assert registry.registered() == {}
