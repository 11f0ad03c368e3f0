"""The on-chain half of the listener: poll the contract's logs into Kafka until stopped.

Reads the chain (JSON-RPC) and ``PREFIX.listener.checkpoints``; writes
``PREFIX.requests.v1``, ``PREFIX.failures.v1`` and ``PREFIX.listener.checkpoints``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

from aiokafka.errors import KafkaError, ProducerFenced

from acesteps.backoff import Backoff
from acesteps.chain import connect
from acesteps.kafka.admin import ensure_topics
from acesteps.messages import ListenerCheckpoint
from listener.chainreader import RangeTooLarge, Web3Reader
from listener.poller import ChainMoved, LogPoller, PollerConfig
from listener.settings import ListenerSettings
from listener.sink import KafkaSink, load_checkpoint, transactional_id

__all__ = ["run_chain_listener"]

log = logging.getLogger(__name__)
KAFKA_RETRIES = 8


def _start_block(settings: ListenerSettings) -> int:
    if settings.listener_start_block is not None:
        return settings.listener_start_block
    return max(1, settings.deployment_block() or 1)


async def run_chain_listener(settings: ListenerSettings, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        # 1. Chain: contract address and chain id (retried until the node answers).
        contract = settings.contract()
        w3 = connect(settings.rpc_url, settings.rpc_timeout_s, settings.rpc_fallback_urls)
        stack.push_async_callback(w3.provider.disconnect)
        reader = Web3Reader(w3, contract, backoff_max_s=settings.listener_rpc_backoff_max_s)
        chain_id = await reader.chain_id()

        # 2. Kafka: topics, then the transactional producer (this fences an older copy and
        #    aborts its open transaction), then the checkpoint it left.
        await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
        txn_id = settings.listener_transactional_id or transactional_id(
            settings.topic_prefix, chain_id, contract
        )
        sink = KafkaSink(
            settings.kafka_bootstrap, txn_id, settings.topics, settings.kafka_client_id
        )
        await sink.start()
        stack.push_async_callback(sink.stop)
        checkpoint = await load_checkpoint(
            settings.kafka_bootstrap, settings.topics, chain_id, contract
        )
        if checkpoint is None:
            start = _start_block(settings)
            header = await reader.header(start - 1)
            checkpoint = ListenerCheckpoint(
                chain_id=chain_id,
                contract=contract,
                block_number=header.number,
                block_hash=header.hash,
            )
        log.info(
            "listening to %s on chain %d from block %d (%s)",
            contract,
            chain_id,
            checkpoint.block_number + 1,
            txn_id,
        )

        # 3. Poll until stopped.
        config = PollerConfig(
            chain_id=chain_id,
            contract=contract,
            confirmations=settings.listener_confirmations,
            block_tag=settings.listener_block_tag,
            max_range=settings.listener_max_block_range,
            history_blocks=settings.listener_history_blocks,
        )
        poller = LogPoller(reader, sink, config, checkpoint)
        await _loop(poller, settings, stop)


async def _loop(poller: LogPoller, settings: ListenerSettings, stop: asyncio.Event) -> None:
    backoff = Backoff(initial_s=1.0, max_s=30.0)
    failures = refusals = 0
    while not stop.is_set():
        try:
            advanced = await poller.step()
            failures = refusals = 0
        except ChainMoved as exc:
            log.info("chain moved during a read (%s); retrying", exc)
            advanced = 0
        except RangeTooLarge as exc:
            # Refused even for one block: nothing to halve; the node may allow it later (a
            # provider's result limit, a plan's quota). Wait, and ask again.
            refusals += 1
            delay = backoff.delay(refusals)
            log.error("the node refuses one block's logs (%s); again in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            continue
        except ProducerFenced:
            log.error("another listener with the same transactional id took over; stopping")
            raise
        except KafkaError as exc:
            failures += 1
            if failures > KAFKA_RETRIES:
                raise
            delay = backoff.delay(failures)
            log.warning("Kafka error (%s); retry %d in %.1fs", exc, failures, delay)
            await asyncio.sleep(delay)
            continue
        if not advanced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.listener_poll_interval_s)
