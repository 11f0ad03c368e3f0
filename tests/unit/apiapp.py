"""The API app in-process for unit tests: a real `SqliteStore` and `Hub`, fakes for the
Kafka producer, IPFS and the chain (the `make_client` fixture, registered by conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from acesteps.ipfs.kubo import KuboClient
from acesteps.messages import CancelRequested, GenerationRequest
from acesteps.models import Catalog
from acesteps.provenance import ManifestProblem
from acesteps.verify import Status as VerdictStatus
from acesteps.verify import Verdict
from listener.api.app import create_app
from listener.api.audiocache import AudioCache
from listener.api.auth import ApiKeys, RateLimiter
from listener.api.deps import ApiDeps
from listener.api.family import Deployment
from listener.api.projection import Hub
from listener.api.sqlitestore import SqliteStore
from listener.api.webhooks.config import WebhookConfig
from listener.api.webhooks.targets import TargetPolicy
from tests.webhookfakes import MapResolver

__all__ = [
    "BODY",
    "CHAIN_ID",
    "CONTRACT",
    "HOSTS",
    "KEYS",
    "MASTER",
    "FakeKafka",
    "bearer",
    "make_client",
]

KEYS = {"alice": "s3cret-alice", "bob": "s3cret-bob"}
CONTRACT = "0x" + "c0" * 20
CHAIN_ID = 31337
BODY = {"prompt": "a calm piano piece", "duration": 5}
MASTER = b"unit-test webhook master key"
HOSTS = {"hooks.example": ["93.184.215.14"], "inside.example": ["10.1.2.3"]}
"""What webhook hosts resolve to here (`tests.webhookfakes.MapResolver`); no deliverer runs
in these apps, so nothing is ever sent to them."""


class FakeKafka:
    def __init__(self) -> None:
        self.sent: list[GenerationRequest] = []
        self.cancels: list[CancelRequested] = []
        self.fail = False
        self.got_one = asyncio.Event()

    async def cancel(self, cancel: CancelRequested) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.cancels.append(cancel)

    async def submit(self, request: GenerationRequest) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append(request)
        self.got_one.set()


async def fake_verifier(request_id: str) -> Verdict:
    return Verdict(VerdictStatus.MATCH, "equal", request_id)


async def fake_manifests(request_id: str) -> bytes:
    raise ManifestProblem("unreachable", f"no IPFS in this test ({request_id})")


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []
    stores: list[SqliteStore] = []

    async def make(
        required: bool = False,
        burst: int = 100,
        per_minute: float = 6000,
        wait_s: float = 0,
        cors: tuple[str, ...] = (),
        webhooks: WebhookConfig | None = None,
        models: Catalog | None = None,
    ) -> tuple[TestClient[Any, Any], ApiDeps, FakeKafka]:
        store = await SqliteStore(
            tmp_path / f"s{len(stores)}.sqlite3", deployment=Deployment(CHAIN_ID, CONTRACT)
        ).open()
        stores.append(store)
        kafka = FakeKafka()
        deps = ApiDeps(
            store=store,
            hub=Hub(),
            projection=None,
            submitter=kafka,
            audio=AudioCache(KuboClient("http://127.0.0.1:9"), tmp_path / "audio"),
            verifier=fake_verifier,
            manifests=fake_manifests,
            keys=ApiKeys(KEYS if required else {}, required=required),
            generate_limit=RateLimiter(per_minute, burst),
            read_limit=RateLimiter(per_minute, burst),
            wait_s=wait_s,
            chain_id=CHAIN_ID,
            contract=CONTRACT,
            cors_origins=cors,
            webhooks=webhooks or WebhookConfig(MASTER, TargetPolicy(resolver=MapResolver(HOSTS))),
            models=models or Catalog.single(),
        )
        client = TestClient(TestServer(create_app(deps)))
        await client.start_server()
        clients.append(client)
        return client, deps, kafka

    yield make
    for client in clients:
        await client.close()
    for store in stores:
        await store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
