"""Wiring of the generator: settings -> served models (`generator.served`) -> transactional loop.

Reads ``PREFIX.requests.v1`` as consumer group ``PREFIX.generator`` (one more host is one
more member; partitions bound the parallelism) and writes ``PREFIX.audio.v1`` and
``PREFIX.failures.v1``; reads ``PREFIX.cancels.v1`` whole (`acesteps.cancels`), to skip or
interrupt what was canceled.
"""

from __future__ import annotations

import asyncio
import logging

from acesteps.cancels import CancelView
from acesteps.ipfs.kubo import KuboClient
from acesteps.kafka.admin import ensure_topics
from acesteps.kafka.loop import LoopConfig, TransactionalLoop
from acesteps.progress import ProgressReporter
from generator.editing import Sources
from generator.pipeline import Pipeline
from generator.policy import ContentPolicy
from generator.presets import Presets
from generator.served import ServedModels
from generator.settings import GeneratorSettings
from generator.stops import Stops
from generator.worker import Deps, handle, prefetch

__all__ = ["run_generator"]

log = logging.getLogger(__name__)


async def run_generator(settings: GeneratorSettings, stop: asyncio.Event) -> None:
    # 1. The served models (acesteps.models): the default one loaded now (slow: off the event
    #    loop; a broken default stops the service here), the others on first use.
    models = ServedModels.from_settings(settings)
    model = await asyncio.to_thread(models.loaded, models.default)
    policy = ContentPolicy.from_file(
        settings.generator_policy_file, enabled=settings.generator_policy_enabled
    )
    # 2. Kafka.
    await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
    instance = settings.generator_instance_id
    config = LoopConfig(
        bootstrap=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}.generator",
        transactional_id=f"{settings.topic_prefix}.generator.{instance}",
        group_instance_id=f"generator-{instance}",
        topics=(settings.topics.requests,),
        failures_topic=settings.topics.failures,
        deadletter_topic=settings.topics.deadletter,
        stage="generator",
        client_id=f"acesteps-{instance}",
        # Dynamic batching: up to max_batch requests, waiting at most max_wait for them.
        # Handling happens before the transaction opens, so batch size does not press on
        # the transaction timeout.
        max_records=settings.generator_max_batch,
        poll_timeout_ms=settings.generator_max_wait_ms,
        # A long clip on a slow device must not cost the partition.
        max_poll_interval_ms=30 * 60 * 1000,
    )
    log.info(
        "generator %s ready: serving %s (default %s: %s loaded); presets: %s",
        instance,
        ", ".join(models.catalog.names),
        models.default,
        model.model_id,
        ", ".join(settings.preset_catalog().names) or "none",
    )
    # 3. Until stopped: the pipeline task feeds the model, the loop feeds the pipeline.
    progress = ProgressReporter(
        settings.kafka_bootstrap, settings.topics.progress, f"generator-{instance}"
    )
    cancels = CancelView(settings.kafka_bootstrap, settings.topics.cancels, f"acesteps-{instance}")
    await cancels.start()  # read up to now before the first request
    stops = Stops(cancels)
    pipeline = Pipeline(models, progress=progress, stopping=stops.why)
    await progress.start()
    presets = Presets(settings.preset_catalog())
    for problem in presets.check():  # their requests will fail with preset_unavailable
        log.error("%s", problem)
    kubo = KuboClient(settings.ipfs_api_url, timeout_s=settings.ipfs_timeout_s)
    sources = Sources(kubo)  # edits fetch their source from IPFS (generator.editing)
    deps = Deps(settings.topics, models, policy, pipeline, progress, stops, presets, sources)
    loop = TransactionalLoop(config, handle, deps, prefetch=prefetch)
    try:
        async with asyncio.TaskGroup() as group:
            feeder = group.create_task(pipeline.run())
            try:
                await loop.run(stop)
            finally:
                feeder.cancel()
    finally:
        await progress.stop()
        await cancels.stop()
        await kubo.close()
