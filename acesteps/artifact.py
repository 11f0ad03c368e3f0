"""The deployment artifact: what a dApp needs to talk to one deployed ``AceStepsRegistry``.

One JSON file per chain, ``deployments/<chainId>.json``, beside the deployment file
(``ACESTEPS_DEPLOYMENT_FILE``, by default ``.cache/run/deployment.json``, so
``.cache/run/deployments/<chainId>.json``), written by ``acesteps contracts deploy`` (and
``acesteps up``); the API serves the same document, read live, at ``GET /api/contract``.
Keys are camelCase for JavaScript; wei amounts are decimal strings, since a JavaScript number
loses precision above 2^53. ``docs/contract.md`` describes every field.

The deployment file (`acesteps.deployment.Deployment`) stays what the services read; the
artifact adds the ABI and the contract's live parameters, and leaves out the roles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from web3.exceptions import Web3Exception

from acesteps import registry
from acesteps.deployment import Deployment

__all__ = ["ContractArtifact", "artifact_dir", "read_artifact", "write_artifact"]


class ContractArtifact(BaseModel):
    """``deployments/<chainId>.json``; None where it is not known (a deployment file that
    does not describe this contract, a contract older than the value)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )
    contract_name: str = registry.NAME
    version: str | None
    """The contract's ``VERSION``."""
    chain_id: int
    address: str
    deployment_block: int | None
    """Where a dApp's log scans start."""
    deployment_tx: str | None
    reclaim_after_blocks: int | None
    request_fee_wei: str | None
    """``requestFee``, in wei, as a decimal string (as read when the artifact was made)."""
    callback_gas_price_wei: str | None
    """``callbackGasPrice``: wei per gas of a callback's limit, a decimal string."""
    bytecode_hash: str | None
    """keccak256 of the deployed creation bytecode (from the deployment file)."""
    abi: list[dict[str, Any]]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"

    def save(self, directory: Path) -> Path:
        """Write ``directory/<chainId>.json`` (atomically); its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.chain_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> ContractArtifact:
        """Raises OSError or ValueError."""
        return cls.model_validate(json.loads(path.read_text()))


def artifact_dir(deployment_file: Path) -> Path:
    """Where the artifacts go: ``deployments/`` beside the deployment file."""
    return deployment_file.parent / "deployments"


async def read_artifact(reg: registry.Registry, deployment: Deployment | None) -> ContractArtifact:
    """The artifact of the registry ``reg`` talks to, its parameters read from the chain;
    the block, transaction and bytecode hash come from ``deployment`` when it describes this
    contract on this chain."""
    chain_id = await reg.chain_id()
    if deployment is not None and (
        deployment.chain_id != chain_id or deployment.address.lower() != reg.address.lower()
    ):
        deployment = None
    return ContractArtifact(
        version=await reg.version(),
        chain_id=chain_id,
        address=reg.address,
        deployment_block=deployment.block_number if deployment else None,
        deployment_tx=deployment.tx_hash if deployment else None,
        reclaim_after_blocks=await _optional(reg.reclaim_after_blocks()),
        request_fee_wei=str(await reg.request_fee()),
        callback_gas_price_wei=_wei(await _optional(reg.callback_gas_price())),
        bytecode_hash=deployment.bytecode_hash if deployment else None,
        abi=registry.abi(),
    )


async def write_artifact(reg: registry.Registry, deployment: Deployment, directory: Path) -> Path:
    """`read_artifact` of a deployment, saved in ``directory``; its path."""
    return (await read_artifact(reg, deployment)).save(directory)


async def _optional(value: Any) -> Any:
    """The awaited value, or None when the contract has no such function (an older one)."""
    try:
        return await value
    except Web3Exception:
        return None


def _wei(value: int | None) -> str | None:
    return None if value is None else str(value)
