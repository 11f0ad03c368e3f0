"""Kafka plumbing shared by the services: topics, producers, transactions, the consume loop.

- `acesteps.kafka.admin`: `ensure_topics`, run at start-up (the broker creates none);
- `acesteps.kafka.producer`: idempotent and transactional producer factories, `send_message`;
- `acesteps.kafka.transactions`: `TransactionalProducer`, the one commit path;
- `acesteps.kafka.records`: `InRecord`/`OutRecord` and dead letters (pure logic);
- `acesteps.kafka.consuming`: what both consume loops share (`LoopConfig`, the consumer,
  the rebalance `Gate`, the `Judge` of failed records);
- `acesteps.kafka.loop`: `TransactionalLoop`, consume-transform-produce with exactly-once
  output, record by record, used by every consuming service;
- `acesteps.kafka.pipelined`: `PipelinedLoop`, the same guarantees for work done a batch at
  a time with several batches in flight (the publisher's registrations).
"""
