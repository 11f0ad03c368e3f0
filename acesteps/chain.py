"""Connecting to the chain and deploying ``AceStepsRegistry`` (web3.py 8, async API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_account import Account
from pydantic import BaseModel, ConfigDict
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract

from acesteps import contracts

__all__ = ["Deployment", "connect", "deploy_registry", "registry"]


class Deployment(BaseModel):
    """Where a registry was deployed; written by ``acesteps contracts deploy``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    chain_id: int
    address: str
    block_number: int
    tx_hash: str
    deployer: str
    publisher: str
    request_fee_wei: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)  # readers never see half a file

    @classmethod
    def load(cls, path: Path) -> Deployment:
        return cls.model_validate(json.loads(path.read_text()))


def connect(rpc_url: str, timeout_s: float = 30.0) -> AsyncWeb3[Any]:
    return AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))


def registry(w3: AsyncWeb3[Any], address: str) -> AsyncContract:
    return w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=contracts.load_abi())


async def deploy_registry(
    w3: AsyncWeb3[Any], private_key: str, publisher: str, request_fee_wei: int = 0
) -> Deployment:
    """Deploy from the committed bytecode; ``publisher`` gets the publisher role."""
    account = Account.from_key(private_key)
    factory = w3.eth.contract(abi=contracts.load_abi(), bytecode=contracts.bytecode())
    tx = await factory.constructor(
        AsyncWeb3.to_checksum_address(publisher), request_fee_wei
    ).build_transaction(
        {
            "from": account.address,
            "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
        }
    )
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
    if receipt["status"] != 1:
        raise RuntimeError(f"deployment reverted in transaction {tx_hash.to_0x_hex()}")
    return Deployment(
        chain_id=await w3.eth.chain_id,
        address=str(receipt["contractAddress"]),
        block_number=receipt["blockNumber"],
        tx_hash=tx_hash.to_0x_hex(),
        deployer=account.address,
        publisher=AsyncWeb3.to_checksum_address(publisher),
        request_fee_wei=request_fee_wei,
    )
