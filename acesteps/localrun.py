"""Running the whole service on one machine: ``acesteps up``, ``acesteps demo``, ``acesteps down``.

``up`` deploys the registry to the local chain (once; anvil's development account 0 is the
owner, account 1 the publisher), then starts ``python -m listener``, ``generator`` and
``publisher`` as background processes with their logs and pid files under ``.cache/run``.
``demo`` sends one request on chain, waits until its track is registered, fetches the file
from IPFS, verifies it as anyone would, and prints one JSON line. ``down`` stops the
services that ``up`` started. Development keys are refused on any chain but anvil's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eth_account import Account

from acesteps.chain import Deployment, connect, deploy_registry, registry
from acesteps.devchain import dev_key
from acesteps.ipfs.kubo import KuboClient
from acesteps.kafka.admin import ensure_topics
from acesteps.messages import TYPE_HEADER, AudioReady, TrackPublished, decode
from acesteps.settings import ChainSettings, StackSettings
from acesteps.verify import KuboSource, verify

__all__ = ["demo", "down", "up"]

SERVICES = ("listener", "generator", "publisher")


def _run_dir() -> Path:
    return StackSettings().log_dir.parent


def _pidfile(name: str) -> Path:
    return _run_dir() / f"{name}.service.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


async def _deploy(settings: ChainSettings) -> Deployment:
    w3 = connect(settings.rpc_url)
    try:
        chain_id = await w3.eth.chain_id
        path = settings.deployment_file
        if path.exists():
            known = Deployment.load(path)
            address = w3.to_checksum_address(known.address)
            if known.chain_id == chain_id and await w3.eth.get_code(address):
                return known
        publisher = Account.from_key(dev_key(1, chain_id)).address
        deployment = await deploy_registry(w3, dev_key(0, chain_id), publisher)
        deployment.save(path)
        return deployment
    finally:
        await w3.provider.disconnect()


def up() -> dict[str, Any]:
    settings = ChainSettings()
    deployment = asyncio.run(_deploy(settings))
    asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topics.specs()))
    env = {
        **os.environ,
        "ACESTEPS_CONTRACT_ADDRESS": deployment.address,
        "ACESTEPS_PRIVATE_KEY": dev_key(1, deployment.chain_id),
        # The real ACE-Step 1.5 when its weights are cached, else the tiny test checkpoint.
        "ACESTEPS_GENERATOR_MODEL": os.environ.get("ACESTEPS_GENERATOR_MODEL", "auto"),
        # anvil mines one block per transaction and never reorgs: no confirmations needed.
        "ACESTEPS_LISTENER_CONFIRMATIONS": os.environ.get("ACESTEPS_LISTENER_CONFIRMATIONS", "0"),
        "ACESTEPS_PUBLISHER_CONFIRMATIONS": os.environ.get("ACESTEPS_PUBLISHER_CONFIRMATIONS", "1"),
        "ACESTEPS_LISTENER_POLL_INTERVAL_S": "0.5",
    }
    log_dir = StackSettings().log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        pidfile = _pidfile(name)
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            continue
        with (log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", name],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pidfile.write_text(str(proc.pid))
    return {"contract": deployment.address, "logs": str(log_dir)}


def down() -> None:
    for name in SERVICES:
        pidfile = _pidfile(name)
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink()


async def _request_on_chain(settings: ChainSettings, prompt: str, duration: int) -> tuple[str, str]:
    w3 = connect(settings.rpc_url)
    try:
        chain_id = await w3.eth.chain_id
        account = Account.from_key(dev_key(2, chain_id))
        contract = registry(w3, settings.contract())
        fee = await contract.functions.requestFee().call()
        tx = await contract.functions.requestGeneration(prompt, "", duration).build_transaction(
            {
                "from": account.address,
                "value": fee,
                "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
            }
        )
        tx_hash = await w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        (event,) = contract.events.GenerationRequested().process_receipt(receipt)
        return "0x" + event["args"]["requestId"].hex(), tx_hash.to_0x_hex()
    finally:
        await w3.provider.disconnect()


async def _wait_track(
    settings: ChainSettings, request_id: str, timeout_s: float
) -> tuple[AudioReady, TrackPublished]:
    """The request's AudioReady (which names the model) and TrackPublished, once committed."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topics.audio,
        settings.topics.tracks,
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    ready: AudioReady | None = None
    try:
        async with asyncio.timeout(timeout_s):
            async for record in consumer:
                if record.key != request_id.encode():
                    continue
                kind = dict(record.headers).get(TYPE_HEADER)
                if kind == b"AudioReady":
                    ready = decode(AudioReady, record.value)
                elif kind == b"TrackPublished" and ready is not None:
                    return ready, decode(TrackPublished, record.value)
    finally:
        await consumer.stop()
    raise TimeoutError(request_id)


async def _demo(prompt: str, duration: int, timeout_s: float) -> dict[str, Any]:
    settings = ChainSettings()
    request_id, request_tx = await _request_on_chain(settings, prompt, duration)
    ready, track = await _wait_track(settings, request_id, timeout_s)
    out = _run_dir() / "tracks" / f"{request_id}.{ready.format}"
    out.parent.mkdir(parents=True, exist_ok=True)
    async with KuboClient(settings.ipfs_api_url) as kubo:
        out.write_bytes(await kubo.cat(track.cid))
        # The check anyone can run: the chain's record against the bytes IPFS serves.
        w3 = connect(settings.rpc_url)
        try:
            contract = registry(w3, settings.contract())
            verdict = await verify(contract, request_id, KuboSource(kubo, settings.ipfs_api_url))
        finally:
            await w3.provider.disconnect()
    return {
        "id": request_id,
        "source": "chain",
        "status": "completed",
        "verified": verdict.status.value,
        "audioHash": track.audio_hash,
        "cid": track.cid,
        "txHash": track.tx_hash,
        "requestTx": request_tx,
        "file": str(out),
        "rpcUrl": settings.rpc_url,
        "contract": settings.contract(),
        "ipfsGateway": f"{settings.ipfs_gateway_url}/ipfs/{track.cid}",
        "model": ready.model_id,
        "tinyModel": ready.model_id.startswith("tiny-"),
    }


def demo(prompt: str, duration: int, timeout_s: float = 600) -> dict[str, Any]:
    return asyncio.run(_demo(prompt, duration, timeout_s))
