"""Topic creation: every service and ``acesteps topics`` call `ensure_topics` at start-up.

Creates the topics in ``specs`` (``PREFIX.requests.v1``, ``PREFIX.audio.v1``, ... see
`acesteps.topics`) with their configs. The broker runs with
``auto.create.topics.enable=false``, so nothing else creates them, and a producer or
consumer that starts on a missing topic would only wait for metadata and time out.

Idempotent: a topic that already exists is left as it is (its layout and configs are not
altered, as that is an operator's decision on a live cluster); what differs from the spec
(partitions, replication factor, configs) is logged and returned, and ``acesteps topics``
prints it and exits with status 1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from acesteps.backoff import Backoff
from acesteps.kafka import connection
from acesteps.topics import TopicSpec

__all__ = ["delete_topics", "ensure_topics", "topic_configs", "topic_partitions"]

log = logging.getLogger(__name__)

_NO_ERROR = 0
_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    client_id: str = "acesteps-admin",
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing topics of ``specs`` and wait until all of them have leaders.

    Each spec carries its partitions, replication factor and configs (`acesteps.topics`,
    from the settings). A topic that exists already is checked against its spec and left as
    it is: what differs (fewer partitions, another replication factor, a config) is logged
    and returned, one line each. Raises the broker's error (``aiokafka.errors.KafkaError``)
    for anything other than "already exists" (a replication factor above the number of
    brokers: ``InvalidReplicationFactorError``), and `TimeoutError` when the metadata does
    not show the topics in ``timeout_s``.
    """
    if not specs:
        return []
    admin = _admin(bootstrap, client_id)
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        spec.replication_factor,
                        topic_configs=dict(spec.configs),
                    )
                    for spec in specs
                ],
                timeout_ms=int(timeout_s * 1000),
            )
            existing = []
            for topic, code, message in _topic_errors(response):
                if code == _ALREADY_EXISTS:
                    existing.append(topic)
                elif code != _NO_ERROR:
                    spec = next(s for s in specs if s.name == topic)
                    raise for_code(code)(
                        f"creating topic {topic} ({spec.partitions} partitions, replication "
                        f"factor {spec.replication_factor}): {message}"
                    )
            # A topic that existed may have fewer partitions than its spec (reported below);
            # one created a moment ago by another service must still show its leaders.
            await _wait_visible(
                admin, [replace(s, partitions=1) if s.name in existing else s for s in specs]
            )
            mismatches: list[str] = []
            for spec in specs:
                if spec.name in existing:
                    mismatches += await _mismatches(admin, spec)
    finally:
        await admin.close()
    for line in mismatches:
        log.warning("%s", line)
    return mismatches


def _admin(bootstrap: str, client_id: str = "acesteps-admin") -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **connection.options(), bootstrap_servers=bootstrap, client_id=client_id
    )


async def delete_topics(bootstrap: str, prefixes: Sequence[str]) -> list[str]:
    """Delete every topic whose first dotted part is one of ``prefixes`` (bench clean-up)."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.split(".")[0] in prefixes]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def topic_partitions(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (a consumer knows them only once it has subscribed)."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = []
    for topic in described:
        if topic["error_code"] != _NO_ERROR:
            raise for_code(topic["error_code"])(f"describing topic {topic['topic']}")
        found += [TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]]
    return sorted(found)


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    """The effective configuration of ``topic`` (defaults included), name -> value."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        return await _describe(admin, topic)
    finally:
        await admin.close()


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    # CreateTopics v0 has no error message; later versions do.
    rows = []
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        rows.append((topic, code, entry[2] if len(entry) > 2 else None))
    return rows


async def _wait_visible(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    """Poll metadata until every topic has all its partitions with a leader.

    CreateTopics returns once the controller has the topic; the broker that a client asks
    next may not, and a producer sending right away then sees NotLeaderForPartition.
    """
    names = [spec.name for spec in specs]
    backoff, attempt = Backoff(initial_s=0.05, max_s=1.0), 0
    while True:
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        if all(_ready(described.get(spec.name), spec) for spec in specs):
            return
        attempt += 1
        await asyncio.sleep(backoff.delay(attempt))


def _ready(topic: dict[str, Any] | None, spec: TopicSpec) -> bool:
    if topic is None or topic["error_code"] != _NO_ERROR:
        return False
    partitions = topic["partitions"]
    return len(partitions) >= spec.partitions and all(
        p["error_code"] == _NO_ERROR and p["leader"] >= 0 for p in partitions
    )


async def _describe(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    configs: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            code, message, name, entries = resource[0], resource[1], resource[3], resource[4]
            if code != _NO_ERROR:
                raise for_code(code)(f"describing topic {name}: {message}")
            for entry in entries:
                configs[entry[0]] = entry[1]
    return configs


async def _mismatches(admin: AIOKafkaAdminClient, spec: TopicSpec) -> list[str]:
    """How the existing topic differs from ``spec`` (it is not altered: an operator's call)."""
    (described,) = await admin.describe_topics([spec.name])
    partitions = described["partitions"]
    found = []
    if len(partitions) < spec.partitions:
        found.append(f"{len(partitions)} partitions, spec {spec.partitions}")
    factors = sorted({len(p["replicas"]) for p in partitions})
    if factors != [spec.replication_factor]:
        found.append(f"replication factor {factors}, spec {spec.replication_factor}")
    actual = await _describe(admin, spec.name)
    for key, wanted in spec.configs.items():
        if actual.get(key) != wanted:
            found.append(f"{key}={actual.get(key)}, spec {wanted}")
    return [f"topic {spec.name} exists with {what}" for what in found]
