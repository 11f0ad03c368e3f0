"""Kafka plumbing shared by the services: topics, producers, the transactional loop.

- `acesteps.kafka.admin`: `ensure_topics`, run at start-up (the broker creates none);
- `acesteps.kafka.producer`: idempotent and transactional producer factories, `send_message`;
- `acesteps.kafka.records`: `InRecord`/`OutRecord`, dead letters, `Backoff` (pure logic);
- `acesteps.kafka.loop`: `TransactionalLoop`, consume-transform-produce with exactly-once
  output, used by every consuming service.
"""

from acesteps.kafka.admin import ensure_topics, topic_configs
from acesteps.kafka.loop import RETRIES_EXHAUSTED, Handler, LoopConfig, TransactionalLoop
from acesteps.kafka.producer import (
    idempotent_producer,
    send_message,
    send_record,
    transactional_producer,
)
from acesteps.kafka.records import (
    MAX_REQUEST_SIZE,
    Backoff,
    InRecord,
    OutRecord,
    dead_letter,
    decode_value,
    request_id_of,
)

__all__ = [
    "MAX_REQUEST_SIZE",
    "RETRIES_EXHAUSTED",
    "Backoff",
    "Handler",
    "InRecord",
    "LoopConfig",
    "OutRecord",
    "TransactionalLoop",
    "dead_letter",
    "decode_value",
    "ensure_topics",
    "idempotent_producer",
    "request_id_of",
    "send_message",
    "send_record",
    "topic_configs",
    "transactional_producer",
]
