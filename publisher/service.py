"""Wiring of the publisher: settings -> clients -> three transactional loops.

Loop ``audio`` reads ``PREFIX.audio.v1`` and writes ``PREFIX.tracks.v1``, in batches with
several registration transactions in flight (`acesteps.kafka.pipelined`); loop ``finality``
reads ``PREFIX.tracks.v1`` and writes ``PREFIX.tracks.v1`` (`publisher.finality`: each
registration until it is final, re-registered when a reorg drops it); loop ``failures`` reads
``PREFIX.failures.v1`` and writes nothing but its offsets. All share one signer
(`TxSender`), so the nonces of the instance's key stay in one place. ``PREFIX.cancels.v1`` is
read whole (`acesteps.cancels`): nothing canceled is pinned or registered.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from acesteps.cancels import CancelView
from acesteps.ipfs.kubo import KuboClient
from acesteps.kafka.admin import ensure_topics
from acesteps.kafka.loop import LoopConfig, TransactionalLoop
from acesteps.kafka.pipelined import PipelinedLoop
from acesteps.progress import ProgressReporter
from acesteps.registry import Registry
from publisher.chunks import ChunkReader
from publisher.finality import FinalityDeps, handle_track
from publisher.handlers import AudioBatches, Deps, handle_failure
from publisher.provider import connect_for_sending
from publisher.remotepin import RemotePinner
from publisher.settings import PublisherSettings
from publisher.txsender import TxSender

__all__ = ["run_publisher"]

log = logging.getLogger(__name__)


def _loop_config(
    settings: PublisherSettings, name: str, topic: str, failures_topic: str, max_records: int = 8
) -> LoopConfig:
    topics = settings.topics
    instance = settings.publisher_instance_id
    return LoopConfig(
        bootstrap=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}.publisher.{name}",
        transactional_id=f"{settings.topic_prefix}.publisher.{name}.{instance}",
        group_instance_id=f"publisher-{name}-{instance}",
        topics=(topic,),
        failures_topic=failures_topic,
        deadletter_topic=topics.deadletter,
        stage="publisher",
        client_id=f"acesteps-publisher-{instance}",
        max_records=max_records,
        max_attempts=settings.publisher_max_attempts,
        # Registration waits for confirmations (and a finality check for up to a minute);
        # allow for a slow chain before giving up the partition.
        max_poll_interval_ms=int(settings.publisher_tx_deadline_s * 1000) + 120_000,
    )


async def run_publisher(settings: PublisherSettings, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        # 1. Chain: the contract and one signer for this instance.
        w3 = connect_for_sending(settings.rpc_url, settings.rpc_timeout_s)
        stack.push_async_callback(w3.provider.disconnect)
        registry = Registry(w3, settings.contract())
        sender = TxSender(w3, settings.signing_key(), settings.tx_policy())
        chain_id = await w3.eth.chain_id
        # 2. IPFS (our Kubo, remote pinning services) and Kafka.
        kubo = await stack.enter_async_context(
            KuboClient(settings.ipfs_api_url, timeout_s=settings.ipfs_timeout_s)
        )
        remote_pins = await stack.enter_async_context(
            RemotePinner(
                settings.publisher_pinning_services,
                timeout_s=settings.publisher_pinning_timeout_s,
            )
        )
        await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
        chunks = ChunkReader(settings.kafka_bootstrap, settings.publisher_chunk_scan_limit)
        await chunks.start()
        stack.push_async_callback(chunks.stop)
        progress = ProgressReporter(
            settings.kafka_bootstrap,
            settings.topics.progress,
            f"publisher-{settings.publisher_instance_id}",
        )
        await progress.start()
        stack.push_async_callback(progress.stop)
        cancels = CancelView(
            settings.kafka_bootstrap,
            settings.topics.cancels,
            f"acesteps-publisher-{settings.publisher_instance_id}",
        )
        await cancels.start()
        stack.push_async_callback(cancels.stop)
        finality = FinalityDeps(
            registry=registry,
            sender=sender,
            finality=settings.finality(),
            topic=settings.topics.tracks,
            confirmations=settings.publisher_confirmations,
            from_block=settings.deployment_block() or 0,
            poll_s=settings.publisher_tx_poll_interval_s,
        )
        deps = Deps(
            topics=settings.topics,
            chunks=chunks,
            kubo=kubo,
            registry=registry,
            sender=sender,
            chain_id=chain_id,
            confirmations=settings.publisher_confirmations,
            from_block=settings.deployment_block() or 0,
            gateway_url=settings.ipfs_gateway_url,
            remote_pins=remote_pins,
            finality=finality,
            progress=progress,
            cancels=cancels,
        )
        log.info(
            "publishing to %s on chain %d as %s; final: %s",
            registry.address,
            chain_id,
            sender.address,
            finality.finality.describe(),
        )
        if settings.publisher_pinning_services:
            names = ", ".join(s.name for s in settings.publisher_pinning_services)
            log.info("remote pinning services: %s", names)
        # 3. The loops until stopped; if one fails, the others are cancelled.
        topics = settings.topics
        pipelining = settings.pipelining()
        # Every record of a batch's tracks (their chunks too) in a few reads.
        reads = pipelining.batch_size * 8
        audio = PipelinedLoop(
            _loop_config(settings, "audio", topics.audio, topics.failures, max_records=reads),
            AudioBatches(),
            deps,
            pipelining,
        )
        # A failure record that cannot be handled must not go back to the topic it came
        # from (it would be read again, forever): its dead letters go to the dead-letter topic.
        failures = TransactionalLoop(
            _loop_config(settings, "failures", topics.failures, topics.deadletter, max_records=1),
            handle_failure,
            deps,
        )
        following = TransactionalLoop(
            # One track at a time: each may wait for its finality, up to `FinalityDeps.wait_s`.
            _loop_config(settings, "finality", topics.tracks, topics.failures, max_records=1),
            handle_track,
            finality,
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(audio.run(stop))
            group.create_task(following.run(stop))
            group.create_task(failures.run(stop))
