"""Running the whole service on one machine: ``acesteps up``, ``acesteps demo``, ``acesteps down``.

``up`` starts the local stack when it is not running (`acesteps.dev.localstack`), deploys the
registry to the local chain (once; anvil's development account 0 is the owner, account 1 the
publisher) and writes its deployment artifact (`acesteps.artifact`), then starts
``python -m listener``, ``generator`` and ``publisher`` as background processes with their
logs and pid files under ``.cache/run``.
``demo`` sends one request on chain (a ``requestGeneration`` transaction) and one over HTTP,
follows both through the API until their tracks are registered, fetches each file from IPFS,
verifies it as anyone would, and prints one JSON line per track. ``down`` stops the services
that ``up`` started, and the stack if ``up`` started it. Development keys are refused on any
chain but anvil's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from web3 import AsyncWeb3
from web3.types import TxParams, Wei

from acesteps import registry
from acesteps.artifact import artifact_dir, write_artifact
from acesteps.bytesources import KuboSource
from acesteps.chain import connect, deploy_registry
from acesteps.cli.api import ApiClient, ApiError, open_session
from acesteps.cli.generate import follow
from acesteps.cli.progressbar import Progress
from acesteps.deployment import Deployment
from acesteps.dev import localstack
from acesteps.dev.devchain import dev_key
from acesteps.dev.localstack import StackSettings
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.kafka.admin import ensure_topics
from acesteps.registry import Registry
from acesteps.settings import ChainSettings, ClientSettings
from acesteps.verify import verify

__all__ = ["demo", "down", "up"]

SERVICES = ("listener", "generator", "publisher")
LOCAL_RECLAIM_AFTER_BLOCKS = 60
"""``reclaimAfterBlocks`` of the local registry unless ACESTEPS_RECLAIM_AFTER_BLOCKS says
otherwise: a minute of the local anvil's one-second blocks, so a requester can try
``reclaim`` without waiting a day."""


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


async def _deploy(settings: ChainSettings) -> tuple[Deployment, Path]:
    """The registry deployed (or the one deployed before, when current) and the path of its
    deployment artifact, written anew."""
    w3 = connect(settings.rpc_url)
    try:
        deployment = await _deployed(w3, settings)
        reg = Registry(w3, deployment.address)
        artifact = await write_artifact(reg, deployment, artifact_dir(settings.deployment_file))
        return deployment, artifact
    finally:
        await w3.provider.disconnect()


async def _deployed(w3: AsyncWeb3[Any], settings: ChainSettings) -> Deployment:
    chain_id = await w3.eth.chain_id
    path = settings.deployment_file
    delay = settings.reclaim_after_blocks or LOCAL_RECLAIM_AFTER_BLOCKS
    if path.exists():
        known = Deployment.load(path)
        address = w3.to_checksum_address(known.address)
        current = known.bytecode_hash == registry.bytecode_hash()
        current = current and known.reclaim_after_blocks == delay
        if current and known.chain_id == chain_id and await w3.eth.get_code(address):
            return known  # this version of the contract is deployed: reuse it
    publisher = Account.from_key(dev_key(1, chain_id)).address
    deployment = await deploy_registry(w3, dev_key(0, chain_id), publisher, 0, delay)
    deployment.save(path)
    return deployment


def _wait_healthy(api_url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{api_url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the API at {api_url} did not answer /healthz within {timeout_s:.0f} s; "
                f"see {StackSettings().log_dir / 'listener.log'}"
            )
        time.sleep(0.3)


def up() -> dict[str, Any]:
    stack_started = localstack.start_if_needed()
    settings = ChainSettings(_env_file=localstack.ENV_FILE)
    api = urlsplit(ClientSettings().api_url)
    deployment, artifact = asyncio.run(_deploy(settings))
    asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_specs()))
    env = {
        **localstack.child_env(dict(os.environ)),
        "ACESTEPS_CONTRACT_ADDRESS": deployment.address,
        "ACESTEPS_PRIVATE_KEY": dev_key(1, deployment.chain_id),
        # The real ACE-Step 1.5 when its weights are cached, else the tiny test checkpoint.
        "ACESTEPS_GENERATOR_MODEL": os.environ.get("ACESTEPS_GENERATOR_MODEL", "auto"),
        # The local anvil mines a block every second (scripts/stack): a request is processed
        # one block deep, a registration is published one block deep and final three deep.
        "ACESTEPS_LISTENER_CONFIRMATIONS": os.environ.get("ACESTEPS_LISTENER_CONFIRMATIONS", "1"),
        "ACESTEPS_PUBLISHER_CONFIRMATIONS": os.environ.get("ACESTEPS_PUBLISHER_CONFIRMATIONS", "1"),
        "ACESTEPS_LISTENER_POLL_INTERVAL_S": "0.5",
        # The API where ACESTEPS_API_URL (the client's setting) says it is.
        "ACESTEPS_API_HOST": api.hostname or "127.0.0.1",
        "ACESTEPS_API_PORT": str(api.port or 80),
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
    api_url = ClientSettings().api_url
    _wait_healthy(api_url)
    return {
        "contract": deployment.address,
        "artifact": str(artifact),
        "api": api_url,
        "logs": str(log_dir),
        "stackStarted": stack_started,
    }


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
    localstack.stop_if_started()


async def _request_on_chain(settings: ChainSettings, prompt: str, duration: int) -> tuple[str, str]:
    w3 = connect(settings.rpc_url)
    try:
        chain_id = await w3.eth.chain_id
        account = Account.from_key(dev_key(2, chain_id))
        contract = Registry(w3, settings.contract())
        params: TxParams = {
            "from": account.address,
            "value": Wei(await contract.request_fee()),
            "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
        }
        tx = await contract.request_generation(prompt, "", duration).build_transaction(params)
        tx_hash = await w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        (event,) = contract.requested(receipt)
        return str(event["requestId"]), tx_hash.to_0x_hex()
    finally:
        await w3.provider.disconnect()


async def _follow(api: ApiClient, request_id: str, label: str, timeout_s: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        # An on-chain request is unknown to the API until the listener has read its block.
        while True:
            try:
                await api.get(request_id)
                break
            except ApiError as exc:
                if exc.code != "not_found":
                    raise
                await asyncio.sleep(0.2)
        progress = Progress(sys.stderr, live=False, label=f"[{label} {request_id[:10]}]")
        record = await follow(api, request_id, progress)
    if record["status"] != "completed":
        error = record.get("error") or {}
        raise RuntimeError(f"request {request_id} ended {record['status']}: {error}")
    return record


async def _fetch_and_verify(
    settings: ChainSettings, kubo: KuboClient, record: dict[str, Any]
) -> dict[str, Any]:
    """The published file from IPFS, checked against the chain as anyone would."""
    out = _run_dir() / "tracks" / f"{record['id']}.{record['format']}"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = await kubo.cat(record["cid"])
    out.write_bytes(data)
    w3 = connect(settings.rpc_url)
    try:
        source = KuboSource(kubo, settings.ipfs_api_url)
        verdict = await verify(Registry(w3, settings.contract()), record["id"], source)
    finally:
        await w3.provider.disconnect()
    # MATCH only when the chain, the bytes and what the API reported all agree.
    agreed = verdict.onchain_audio_hash == record["audioHash"] == keccak256_hex(data)
    agreed = agreed and verdict.manifest_matches is True  # its provenance checks out too
    line = {
        "id": record["id"],
        "source": record["source"],
        "status": record["status"],
        "verified": verdict.status.value if agreed else "MISMATCH",
        # Registered, and until the registration is final a reorg could still drop it.
        "final": verdict.final,
        "audioHash": record["audioHash"],
        "cid": record["cid"],
        "txHash": record["txHash"],
        "manifestCid": record["manifestCid"],
        "manifestHash": record["manifestHash"],
        "file": str(out),
        "rpcUrl": settings.rpc_url,
        "contract": settings.contract(),
        "ipfsGateway": f"{settings.ipfs_gateway_url}/ipfs/{record['cid']}",
        # The checkpoint that made it (the record's ``model`` is the served model's name).
        "model": record.get("modelId") or record["model"],
        "tinyModel": str(record.get("modelId") or record["model"]).startswith("tiny-"),
        "seed": record["seed"],
    }
    if record.get("requestTxHash"):
        line["requestTx"] = record["requestTxHash"]
    return line


async def _demo(prompt: str, duration: int, timeout_s: float) -> list[dict[str, Any]]:
    settings = ChainSettings(_env_file=localstack.ENV_FILE)
    client = ClientSettings()
    key = client.api_key.get_secret_value() if client.api_key else None
    async with open_session(key) as session:
        api = ApiClient(session, client.api_url)
        # 1. One request on chain, one over HTTP, followed side by side through the API.
        on_chain, _ = await _request_on_chain(settings, prompt, duration)
        http = await api.submit({"prompt": prompt, "duration": duration})
        records = await asyncio.gather(
            _follow(api, on_chain, "chain", timeout_s),
            _follow(api, http["id"], "http", timeout_s),
        )
    # 2. Each file from IPFS, verified against its registration.
    async with KuboClient(settings.ipfs_api_url) as kubo:
        lines = [await _fetch_and_verify(settings, kubo, r) for r in records]
    for line in lines:
        line["apiUrl"] = client.api_url
    return lines


def demo(prompt: str, duration: int, timeout_s: float = 600) -> list[dict[str, Any]]:
    """One JSON-ready dict per track: the on-chain request's, then the HTTP request's."""
    return asyncio.run(_demo(prompt, duration, timeout_s))


def model_notice(lines: list[dict[str, Any]]) -> str:
    """What made the tracks, said loudly when it was the tiny test checkpoint."""
    models = sorted({str(line["model"]) for line in lines})
    if any(line["tinyModel"] for line in lines):
        bar = "!" * 78
        return (
            f"{bar}\n!! These tracks were made by the TINY TEST CHECKPOINT ({', '.join(models)}):\n"
            "!! random weights, the audio is noise. No ACE-Step 1.5 weights were found locally\n"
            "!! (the generator's log says how to get them: `acesteps models pull`, README\n"
            '!! "Models"; docs/deploy.md, ACESTEPS_GENERATOR_MODEL).\n'
            f"{bar}"
        )
    return f"model: {', '.join(models)} (real ACE-Step weights)"
