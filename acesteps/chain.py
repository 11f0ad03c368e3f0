"""Connecting to the chain and deploying ``AceStepsRegistry`` (web3.py 8, async API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from acesteps import registry
from acesteps.deployment import Deployment
from acesteps.rpcfailover import FailoverHTTPProvider

__all__ = ["DEFAULT_RECLAIM_AFTER_BLOCKS", "connect", "deploy_registry"]

DEFAULT_RECLAIM_AFTER_BLOCKS: Final = 7200
"""The registry's ``reclaimAfterBlocks`` unless told otherwise: about a day of 12-second blocks
before a requester may ``reclaim`` the fee of a request the services never answered."""


def connect(
    rpc_url: str, timeout_s: float = 30.0, fallback_urls: Sequence[str] = ()
) -> AsyncWeb3[Any]:
    """A client of ``rpc_url``; with ``fallback_urls``, of those too, one after another when
    a node fails or is rate-limited (`acesteps.rpcfailover`)."""
    kwargs = {"timeout": timeout_s}
    if fallback_urls:
        return AsyncWeb3(FailoverHTTPProvider([rpc_url, *fallback_urls], request_kwargs=kwargs))
    return AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs=kwargs))


async def deploy_registry(
    w3: AsyncWeb3[Any],
    private_key: str,
    publisher: str,
    request_fee_wei: int = 0,
    reclaim_after_blocks: int = DEFAULT_RECLAIM_AFTER_BLOCKS,
) -> Deployment:
    """Deploy from the committed bytecode; ``publisher`` gets the publisher role, and a
    requester may ``reclaim`` a request unanswered ``reclaim_after_blocks`` blocks after its
    block (1 to 2**64 - 1: the constructor refuses others with ``BadReclaimDelay``)."""
    account = Account.from_key(private_key)
    factory = w3.eth.contract(abi=registry.abi(), bytecode=registry.bytecode())
    tx = await factory.constructor(
        AsyncWeb3.to_checksum_address(publisher), request_fee_wei, reclaim_after_blocks
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
        reclaim_after_blocks=reclaim_after_blocks,
        bytecode_hash=registry.bytecode_hash(),
    )
