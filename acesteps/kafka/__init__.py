"""Kafka plumbing shared by the services: topics, producers, transactions, the consume loop.

- `acesteps.kafka.admin`: `ensure_topics`, run at start-up (the broker creates none);
- `acesteps.kafka.producer`: idempotent and transactional producer factories, `send_message`;
- `acesteps.kafka.transactions`: `TransactionalProducer`, the one commit path;
- `acesteps.kafka.records`: `InRecord`/`OutRecord` and dead letters (pure logic);
- `acesteps.kafka.loop`: `TransactionalLoop`, consume-transform-produce with exactly-once
  output, used by every consuming service.
"""
