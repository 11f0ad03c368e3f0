"""The whole service for API tests: a private anvil with a fresh registry, and the listener
(with its API on a free port), generator (tiny model) and publisher as real subprocesses on
the shared Kafka and Kubo, under topics of their own."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from eth_account import Account

from acesteps.dev.devchain import dev_key
from acesteps.dev.localstack import StackSettings
from acesteps.settings import CommonSettings
from tests.integration.anvil import Anvil, free_port
from tests.integration.chainload import ChainLoader
from tests.integration.kafkaread import eventually
from tests.integration.services import ServiceProcess

__all__ = ["Pipeline", "record", "record_where", "running_pipeline", "wait_healthy"]

PUBLISHER_KEY = dev_key(1)
RECLAIM_AFTER_BLOCKS = 20
"""The test registry's ``reclaimAfterBlocks``: a test mines past it at once."""


@dataclass
class Pipeline:
    api_url: str
    prefix: str
    log_dir: Path
    anvil: Anvil
    chain: ChainLoader
    contract: str
    env: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(self, name: str, module: str | None = None, **env: str) -> ServiceProcess:
        """Start service ``name`` (again, after a kill) with its settings; another instance of
        a service is ``start("generator-2", "generator", ACESTEPS_...=...)``, with the
        settings of ``module`` and ``env`` over them."""
        module = module or name
        proc = ServiceProcess(
            module,
            {**self.env, **self.service_env[module], **env},
            self.log_dir / f"{name}.log",
        )
        self.services[name] = proc.start()
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.tail(40)}" for n, p in self.services.items())


def wait_healthy(
    url: str, pipeline: Pipeline, service: str = "listener", timeout_s: float = 60
) -> None:
    """Until ``url``/healthz answers 200; fails when ``service`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if not pipeline.services[service].alive():
            break
        time.sleep(0.2)
    raise AssertionError(f"the API at {url} did not become healthy\n{pipeline.logs()}")


@contextmanager
def running_pipeline(
    stack: CommonSettings,
    *,
    start: Sequence[str] = ("listener", "generator", "publisher"),
    settings: Mapping[str, Mapping[str, str]] | None = None,
    common: Mapping[str, str] | None = None,
    **api_env: str,
) -> Iterator[Pipeline]:
    """The services of ``start`` running (start the others with `Pipeline.start`);
    ``api_env`` adds ``ACESTEPS_*`` settings of the listener, ``settings`` of any service,
    ``common`` of all of them (another Kafka, for example)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    log_dir = StackSettings().log_dir / prefix
    log_dir.mkdir(parents=True, exist_ok=True)
    # Blocks every half second, as on a real chain: requests are processed one block deep and
    # registrations become final two blocks deep.
    anvil = Anvil(log_dir, block_time=0.5, mixed=True).start()
    try:
        chain = ChainLoader(anvil.url)
        publisher = Account.from_key(PUBLISHER_KEY).address
        contract = chain.deploy(args=(publisher, 0, RECLAIM_AFTER_BLOCKS))
        port = free_port()
        env = {
            "ACESTEPS_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "ACESTEPS_TOPIC_PREFIX": prefix,
            "ACESTEPS_RPC_URL": anvil.url,
            "ACESTEPS_IPFS_API_URL": stack.ipfs_api_url,
            "ACESTEPS_IPFS_GATEWAY_URL": stack.ipfs_gateway_url,
            "ACESTEPS_CONTRACT_ADDRESS": contract,
            "ACESTEPS_DEPLOYMENT_FILE": str(log_dir / "no-deployment.json"),
            "ACESTEPS_FINALITY_DEPTH": "2",
            **(common or {}),
        }
        url = f"http://127.0.0.1:{port}"
        pipeline = Pipeline(url, prefix, log_dir, anvil, chain, contract, env)
        service_env = {
            "listener": {
                "ACESTEPS_API_PORT": str(port),
                "ACESTEPS_API_STORE_URL": f"sqlite:///{log_dir / 'status.sqlite3'}",
                "ACESTEPS_API_AUDIO_CACHE_DIR": str(log_dir / "audio"),
                "ACESTEPS_LISTENER_CONFIRMATIONS": "1",
                "ACESTEPS_LISTENER_POLL_INTERVAL_S": "0.1",
                **api_env,
            },
            "generator": {
                "ACESTEPS_GENERATOR_MODEL": "tiny",
                "ACESTEPS_GENERATOR_INSTANCE_ID": f"gen-{prefix}",
            },
            "publisher": {
                "ACESTEPS_PRIVATE_KEY": PUBLISHER_KEY,
                "ACESTEPS_PUBLISHER_INSTANCE_ID": f"pub-{prefix}",
                "ACESTEPS_PUBLISHER_CONFIRMATIONS": "1",
                "ACESTEPS_PUBLISHER_TX_POLL_INTERVAL_S": "0.1",
            },
        }
        for name, extra in (settings or {}).items():
            service_env[name].update(extra)
        pipeline.service_env = service_env
        try:
            for name in start:
                pipeline.start(name)
            if "listener" in start:
                wait_healthy(pipeline.api_url, pipeline)
            yield pipeline
        finally:
            for proc in pipeline.services.values():
                proc.stop()
    finally:
        anvil.stop()


def record(pipeline: Pipeline, request_id: str) -> dict[str, Any]:
    url = f"{pipeline.api_url}/api/generations/{request_id}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            body: dict[str, Any] = json.load(answer)
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {"id": request_id, "status": None}
        raise


async def record_where(
    pipeline: Pipeline, request_id: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def holds() -> bool:
        for name, proc in pipeline.services.items():
            assert proc.alive(), f"{name} exited:\n{pipeline.logs()}"
        found.update(record(pipeline, request_id))
        return check(found)

    try:
        await eventually(holds, 120, what, interval_s=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {found}\n{pipeline.logs()}") from None
    return found


async def http_json(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON body) of a request to the API (``method=`` picks the method: GET)."""
    async with http.request(kwargs.pop("method", "GET"), url, **kwargs) as answer:
        return answer.status, await answer.json(content_type=None)


async def final_record(http: aiohttp.ClientSession, url: str, timeout_s: float = 150) -> Any:
    """The record at ``url`` once it has ended (completed, failed, canceled or revoked)."""
    async with asyncio.timeout(timeout_s):
        while True:
            status, found = await http_json(http, url)
            assert status == 200, found
            if found["status"] in ("completed", "failed", "canceled", "revoked"):
                return found
            await asyncio.sleep(0.5)
