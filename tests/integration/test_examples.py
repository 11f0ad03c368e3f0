"""The example dApp (``examples/dapp``, Node.js and viem) against the real services.

The listener, generator (tiny model) and publisher run on a private anvil
(`tests.integration.pipeline`); the example reads the deployment artifact the API serves
(``GET /api/contract``, saved to a file as ``acesteps contracts deploy`` would write it),
requests a track on chain, waits for its registration, fetches it from the stack's Kubo
gateway and checks it with the contract's ``verify``. Its npm packages come from
``examples/dapp/install`` (cached under ``.cache/dapp``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from acesteps.artifact import ContractArtifact
from acesteps.chain import DEFAULT_RECLAIM_AFTER_BLOCKS
from acesteps.cli.main import main
from acesteps.deployment import Deployment
from acesteps.dev import CHECKOUT
from acesteps.dev.devchain import dev_key
from acesteps.registry import abi
from acesteps.settings import CommonSettings
from tests.integration.anvil import Anvil
from tests.integration.pipeline import record_where, running_pipeline

EXAMPLE = CHECKOUT / "examples" / "dapp"
REQUESTER_KEY = dev_key(3)  # the pipeline's chain: 0 deployed the registry, 1 publishes


@pytest.fixture(scope="module")
def node_modules() -> Path:
    installed = subprocess.run(
        [str(EXAMPLE / "install")], capture_output=True, text=True, check=False, timeout=300
    )
    assert installed.returncode == 0, installed.stderr
    return Path(installed.stdout.strip())


@pytest.mark.parametrize(
    "options",
    [
        None,
        {"bpm": 96, "key": "f# minor", "format": "flac", "tags": ["strings"], "preset": "lofi"},
        {"variations": 2, "seed": 7},
    ],
    ids=["plain", "with options", "with variations"],
)
async def test_the_example_dapp_requests_waits_fetches_and_verifies(
    stack: CommonSettings, node_modules: Path, tmp_path: Path, options: dict[str, Any] | None
) -> None:
    presets = {"lofi": {"tags": ["lo-fi"]}}  # tags only: no adapter
    with running_pipeline(stack, common={"ACESTEPS_PRESETS": json.dumps(presets)}) as pipeline:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{pipeline.api_url}/api/contract") as answer:
                assert answer.status == 200
                served = await answer.json()
        artifact = ContractArtifact.model_validate(served)
        assert (artifact.chain_id, artifact.address.lower()) == (31337, pipeline.contract.lower())
        assert artifact.version == "1.3.0" and artifact.abi == abi()
        assert artifact.reclaim_after_blocks == 20 and artifact.request_fee_wei == "0"
        path = artifact.save(tmp_path / "deployments")

        env = {
            "PATH": os.environ["PATH"],
            "NODE_PATH": str(node_modules),
            "ACESTEPS_RPC_URL": pipeline.anvil.url,
            "ACESTEPS_ARTIFACT": str(path),
            "ACESTEPS_IPFS_GATEWAY_URL": stack.ipfs_gateway_url,
            "DAPP_PRIVATE_KEY": REQUESTER_KEY,
            "DAPP_PROMPT": "a calm piano piece, example dApp",
            "DAPP_DURATION": "5",
            "DAPP_TIMEOUT_S": "90",
            **({"DAPP_OPTIONS": json.dumps(options)} if options else {}),
        }
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(EXAMPLE / "request-and-verify.cjs"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, f"{err.decode()}\n{out.decode()}\n{pipeline.logs()}"
        result = json.loads(out)
        assert result["verified"] is True
        assert result["computedHash"] == result["audioHash"]
        assert result["bytes"] > 0 and result["cid"].startswith("baf")

        # The service agrees: the same track under the same id.
        record = await record_where(
            pipeline, result["requestId"], lambda r: r.get("status") == "completed", "published"
        )
        assert (record["audioHash"], record["cid"]) == (result["audioHash"], result["cid"])
        if options and "variations" in options:  # two tracks, each verified
            (other,) = result["variations"]
            assert other["variation"] == 1 and other["verified"] is True
            assert other["audioHash"] != result["audioHash"]
            child = await record_where(
                pipeline, other["requestId"], lambda r: r.get("status") == "completed", "it"
            )
            assert (record["seed"], child["seed"], child["parent"]) == (7, 8, result["requestId"])
        elif options:  # what the options asked for, as the service understood it
            assert (record["bpm"], record["key"], record["format"]) == (96, "F# minor", "flac")
            assert record["tags"] == ["strings"] and record["preset"] == "lofi"
        else:
            assert record.get("bpm") is None and record["format"] == "mp3"
            assert record.get("preset") is None


def test_contracts_deploy_writes_the_deployment_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node = Anvil(tmp_path).start()
    try:
        monkeypatch.setenv("ACESTEPS_RPC_URL", node.url)
        out = tmp_path / "run" / "deployment.json"
        assert main(["contracts", "deploy", "--dev-account", "0", "--out", str(out)]) == 0
        deployment = Deployment.model_validate_json(capsys.readouterr().out)
        assert Deployment.load(out) == deployment
        # Beside the deployment file, named by the chain id.
        artifact = ContractArtifact.load(tmp_path / "run" / "deployments" / "31337.json")
        assert artifact.address == deployment.address
        assert artifact.deployment_block == deployment.block_number
        assert artifact.deployment_tx == deployment.tx_hash
        assert artifact.bytecode_hash == deployment.bytecode_hash
        assert artifact.reclaim_after_blocks == DEFAULT_RECLAIM_AFTER_BLOCKS
        assert (artifact.request_fee_wei, artifact.callback_gas_price_wei) == ("0", "0")
        assert artifact.version == "1.3.0" and artifact.abi == abi()
        raw = json.loads((tmp_path / "run" / "deployments" / "31337.json").read_text())
        assert raw["chainId"] == 31337 and raw["deploymentBlock"] == deployment.block_number
    finally:
        node.stop()
