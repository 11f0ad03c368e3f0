"""Wiring of the HTTP API: settings -> store, Kafka, IPFS, chain -> projection + web server.

Reads ``PREFIX.requests.v1``, ``PREFIX.progress.v1``, ``PREFIX.tracks.v1`` and
``PREFIX.failures.v1`` (the status projection) and writes ``PREFIX.requests.v1`` (HTTP
requests, idempotent producer keyed by request id) and ``PREFIX.cancels.v1`` (their
cancels), sending again what it accepted but
Kafka may not have received (`listener.api.outbox`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from web3 import AsyncWeb3
from web3.exceptions import Web3Exception

from acesteps.artifact import read_artifact
from acesteps.backoff import Backoff
from acesteps.bytesources import KuboSource
from acesteps.chain import connect
from acesteps.ipfs.kubo import KuboClient
from acesteps.kafka.admin import ensure_topics
from acesteps.kafka.producer import idempotent_producer, send_message
from acesteps.messages import CancelRequested, GenerationRequest, Message
from acesteps.provenance import fetch_manifest
from acesteps.registry import Registry
from acesteps.topics import Topics
from acesteps.verify import Verdict, verify
from listener.api.app import create_app
from listener.api.audiocache import AudioCache
from listener.api.auth import ApiKeys, RateLimiter
from listener.api.contract import CachedArtifact
from listener.api.deps import ApiDeps
from listener.api.family import Deployment
from listener.api.outbox import Outbox
from listener.api.pageconfig import PageConfig
from listener.api.projection import Hub, Projection
from listener.api.store import Store, open_store
from listener.api.webhooks.config import WebhookConfig, load_master
from listener.api.webhooks.deliverer import Deliverer
from listener.api.webhooks.targets import TargetPolicy
from listener.settings import ListenerSettings

__all__ = ["KafkaSubmitter", "public_base_url", "run_api"]

log = logging.getLogger(__name__)


class KafkaSubmitter:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self._producer = producer
        self._topics = topics

    async def submit(self, request: GenerationRequest) -> None:
        await self._send(self._topics.requests, request.request_id, request)

    async def cancel(self, cancel: CancelRequested) -> None:
        await self._send(self._topics.cancels, cancel.request_id, cancel)

    async def _send(self, topic: str, key: str, message: Message) -> None:
        async with asyncio.timeout(15):
            await (await send_message(self._producer, topic, key, message))


async def run_api(settings: ListenerSettings, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as stack:
        # 1. The chain (HTTP request ids depend on its id and the registry), the store, then
        # the projection that fills it from the topics.
        w3 = connect(settings.rpc_url, settings.rpc_timeout_s, settings.rpc_fallback_urls)
        stack.push_async_callback(w3.provider.disconnect)
        registry = Registry(w3, settings.contract())
        chain_id = await _chain_id(w3)
        deployment = Deployment(chain_id, registry.address)
        store: Store = await open_store(settings.api_store_url, deployment)
        stack.push_async_callback(store.close)
        await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
        hub = Hub()
        projection = Projection(settings.kafka_bootstrap, settings.topics, store, hub)
        # Webhooks: their secrets' master key (set, or kept in the store), their targets' rules.
        targets = TargetPolicy(
            allow_http=settings.api_webhook_allow_http,
            allow_nets=tuple(settings.api_webhook_allow_nets),
        )
        master = await load_master(store, settings)
        webhooks = WebhookConfig.from_settings(settings, master, targets)

        # 2. Clients: Kafka (requests), Kubo (audio, uploads).
        producer = idempotent_producer(settings.kafka_bootstrap, client_id="acesteps-api")
        await producer.start()
        stack.push_async_callback(producer.stop)
        kubo = await stack.enter_async_context(
            KuboClient(settings.ipfs_api_url, timeout_s=settings.ipfs_timeout_s)
        )
        from_block = settings.deployment_block() or 0

        async def manifests(request_id: str) -> bytes:
            source = KuboSource(kubo, settings.ipfs_api_url)
            return (await fetch_manifest(registry, request_id, source)).data

        async def verifier(request_id: str) -> Verdict:
            source = KuboSource(kubo, settings.ipfs_api_url)
            return await verify(
                registry, request_id, source, from_block=from_block, finality=settings.finality()
            )

        deps = ApiDeps(
            store=store,
            hub=hub,
            projection=projection,
            submitter=KafkaSubmitter(producer, settings.topics),
            audio=AudioCache(
                kubo, settings.api_audio_cache_dir, settings.api_audio_cache_mb * 2**20
            ),
            verifier=verifier,
            manifests=manifests,
            keys=ApiKeys(
                {k: v.get_secret_value() for k, v in settings.api_keys.items()},
                required=settings.api_auth_required,
            ),
            generate_limit=RateLimiter(
                settings.api_generate_per_minute, settings.api_generate_burst
            ),
            read_limit=RateLimiter(settings.api_read_per_minute, settings.api_read_burst),
            error_limit=RateLimiter(settings.api_error_per_minute, settings.api_error_burst),
            wait_s=settings.api_wait_s,
            chain_id=chain_id,
            contract=registry.address,
            public_url=settings.api_public_url,
            resend_after_s=settings.api_resend_after_s,
            cors_origins=tuple(settings.api_cors_origins),
            webhooks=webhooks,
            models=settings.catalog(),
            presets=settings.preset_catalog(),
            contract_artifact=CachedArtifact(
                lambda: read_artifact(registry, settings.deployment(registry.address))
            ),
            pages=PageConfig.of(
                settings.rpc_url,
                settings.api_public_rpc_url,
                settings.api_public_gateway_url or settings.ipfs_gateway_url,
                settings.api_explorer_url,
                from_block,
            ),
            ipfs=kubo,
            upload_max_bytes=settings.api_upload_max_mb * 2**20,
        )
        outbox = Outbox(
            store, deps.submitter, settings.api_resend_after_s, settings.api_resend_after_s
        )

        # 3. Serve until stopped; the projection runs beside the server.
        runner = web.AppRunner(create_app(deps), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.api_host, settings.api_port).start()
        log.info(
            "API on http://%s:%d (keys %s)",
            settings.api_host,
            settings.api_port,
            "required" if settings.api_auth_required else "off",
        )
        background = [asyncio.create_task(outbox.run(stop), name="outbox")]
        if settings.api_webhooks:
            deliverer = Deliverer(store, webhooks, public_base_url(settings))
            background.append(asyncio.create_task(deliverer.run(stop), name="webhooks"))
        try:
            await projection.run(stop)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)


def public_base_url(settings: ListenerSettings) -> str:
    """The base of the URLs handed out where no HTTP request tells the host (webhooks):
    ``ACESTEPS_API_PUBLIC_URL``, else the address the API binds."""
    if settings.api_public_url:
        return settings.api_public_url.rstrip("/")
    host = settings.api_host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.api_port}"


async def _chain_id(w3: AsyncWeb3[Any]) -> int:
    """The chain's id (HTTP request ids depend on it), waiting for the node if it is down."""
    backoff = Backoff(initial_s=0.5, max_s=10.0)
    attempt = 0
    while True:
        try:
            return int(await w3.eth.chain_id)
        except (aiohttp.ClientError, OSError, TimeoutError, Web3Exception) as exc:
            attempt += 1
            delay = backoff.delay(attempt)
            log.warning("reading the chain id failed (%r); again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
