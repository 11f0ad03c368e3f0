"""Gas used by AceStepsRegistry's calls, measured on a fresh instance on a local anvil.

    source .cache/run/stack.env && .cache/venv/bin/python bench/contract_gas.py

Deploys from the committed bytecode to the anvil at ACESTEPS_RPC_URL with anvil's dev
account 9 (owner, publisher and requester at once), with a request fee so that markFailed
sends a refund, and prints one JSON object: gas used per call.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.logs import DISCARD
from web3.types import TxReceipt

from acesteps.chain import connect, deploy_registry
from acesteps.dev.devchain import dev_key
from acesteps.registry import Registry
from acesteps.settings import ChainSettings, load_settings

FEE = 10**15  # 0.001 ether
TYPICAL_PROMPT = "warm lo-fi hip hop beat, vinyl crackle, mellow piano, 80 bpm"  # 60 chars
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # CIDv1 base32, 59 chars
AUDIO_HASH = keccak(b"the bytes of a flac file")
# A generation manifest's hash and CID (a raw-leaf CIDv1 of a few KB, 59 characters).
MANIFEST_HASH = keccak(b"the canonical bytes of a generation manifest")
MANIFEST_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


async def send(w3: AsyncWeb3, account: LocalAccount, call: Any, value: int = 0) -> TxReceipt:
    tx = await call.build_transaction(
        {
            "from": account.address,
            "value": value,
            "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
        }
    )
    tx_hash = await w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


async def measure(rpc_url: str) -> dict[str, Any]:
    w3 = connect(rpc_url)
    try:
        chain_id = await w3.eth.chain_id
        key = dev_key(9, chain_id)  # refuses any chain but anvil's
        account: LocalAccount = Account.from_key(key)
        deployment = await deploy_registry(w3, key, account.address, FEE)
        deploy = await w3.eth.get_transaction_receipt(deployment.tx_hash)
        reg = Registry(w3, deployment.address).contract
        functions = reg.functions

        async def request(prompt: str, lyrics: str) -> tuple[bytes, int]:
            call = functions.requestGeneration(prompt, lyrics, 30)
            receipt = await send(w3, account, call, FEE)
            (event,) = reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
            return bytes(event["args"]["requestId"]), receipt["gasUsed"]

        typical_id, typical_gas = await request(TYPICAL_PROMPT, "")
        _, largest_gas = await request("p" * 1000, "l" * 4096)
        failing_id, _ = await request(TYPICAL_PROMPT, "")

        register = await send(
            w3,
            account,
            functions.registerTrack(typical_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID),
        )
        http = functions.registerOffchainTrack(
            b"\x01" * 32, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
        )
        offchain = await send(w3, account, http)
        fail = await send(w3, account, functions.markFailed(failing_id, "generation failed"))
        (failed,) = reg.events.GenerationFailed().process_receipt(fail, errors=DISCARD)
        if failed["args"]["refund"] != FEE:
            raise RuntimeError(f"markFailed refunded {failed['args']['refund']}, not {FEE}")
        verify = await functions.verify(typical_id, AUDIO_HASH).estimate_gas()

        return {
            "chain_id": chain_id,
            "contract": deployment.address,
            "request_fee_wei": FEE,
            "gas_used": {
                "deploy": deploy["gasUsed"],
                "requestGeneration_typical_60_char_prompt_no_lyrics": typical_gas,
                "requestGeneration_1000_byte_prompt_4096_byte_lyrics": largest_gas,
                "registerTrack_59_char_cid": register["gasUsed"],
                "registerOffchainTrack_59_char_cid": offchain["gasUsed"],
                "markFailed_with_refund": fail["gasUsed"],
                "verify_eth_estimateGas": verify,
            },
        }
    finally:
        await w3.provider.disconnect()


def main() -> int:
    settings = load_settings(ChainSettings)
    print(json.dumps(asyncio.run(measure(settings.rpc_url)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
