"""Gas used by AceStepsRegistry's calls, measured on a fresh instance on a local anvil.

    source .cache/run/stack.env && .cache/venv/bin/python bench/contract_gas.py

Deploys from the committed bytecode to the anvil at ACESTEPS_RPC_URL with anvil's dev
account 9 (owner, publisher and requester at once), with a request fee so that markFailed,
cancelRequest and reclaim send a refund (and a reclaim delay of one block, mined with
``anvil_mine``), and prints one JSON object: gas used per call (``requestGenerationWithOptions``
with typical options, alone and with 2-4 variations), and for ``registerTracks`` batches of
1, 10, 20 and 50 chain requests, and as many off-chain (HTTP) requests, the gas of
the transaction and per track. Every registration has its own hashes and CID (dag-pb and raw
alternating), as real ones would; the chain requests of a batch are pending, with a fee.

Callbacks (``requestGenerationWithCallback``): a requester contract compiled here with solc-js
(``NoopConsumer``: its callback does nothing, so the rows show what the registry adds) sends
plain and callback requests, and its requests are registered alone and in a batch of 50
(20,000 gas each: the batch's whole callback budget); ``contracts/examples/ExampleConsumer.sol``
shows a callback that stores the hash and CID. The callback gas price is 1 gwei.
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
from web3.types import RPCEndpoint, TxReceipt

from acesteps.chain import connect, deploy_registry
from acesteps.chainoptions import encode_options
from acesteps.dev.contracts import CONTRACTS_DIR
from acesteps.dev.devchain import dev_key
from acesteps.dev.solc import compile_sources
from acesteps.ipfs.unixfs import cid_to_str, keccak_block_cid
from acesteps.registry import Provenance, Registry, Track, TrackItem
from acesteps.settings import ChainSettings, load_settings
from acesteps.types import to_hex

FEE = 10**15  # 0.001 ether
TYPICAL_PROMPT = "warm lo-fi hip hop beat, vinyl crackle, mellow piano, 80 bpm"  # 60 chars
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # CIDv1 dag-pb sha2-256
AUDIO_HASH = keccak(b"the bytes of a flac file")
# A generation manifest's hash and CID (CIDv1 raw keccak-256: the hash, spelled out).
MANIFEST_HASH = keccak(b"the canonical bytes of a generation manifest")
MANIFEST_CID = keccak_block_cid(MANIFEST_HASH)
BATCH_SIZES = (1, 10, 20, 50)
RECLAIM_AFTER_BLOCKS = 1  # the gas of reclaim does not depend on it; one block is quick to mine
CALLBACK_GAS_PRICE = 10**9  # wei per gas of a callback's limit
BATCH_CALLBACK_GAS = 20_000  # 50 of them: the batch's whole MAX_BATCH_CALLBACK_GAS
NOOP_CONSUMER = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface IRegistry {
    function requestGeneration(string calldata, string calldata, uint32)
        external payable returns (bytes32);
    function requestGenerationWithCallback(string calldata, string calldata, uint32, uint32)
        external payable returns (bytes32);
}

contract NoopConsumer {
    IRegistry public immutable registry;

    constructor(IRegistry registry_) { registry = registry_; }

    function request(string calldata prompt) external payable returns (bytes32) {
        return registry.requestGeneration{value: msg.value}(prompt, "", 30);
    }

    function requestWithCallback(string calldata prompt, uint32 gasLimit)
        external payable returns (bytes32)
    {
        return registry.requestGenerationWithCallback{value: msg.value}(prompt, "", 30, gasLimit);
    }

    function onTrackRegistered(bytes32, bytes32, string calldata) external {}
}
"""


def consumers() -> dict[str, Any]:
    """The ABI and bytecode of ``NoopConsumer`` and ``ExampleConsumer`` (solc-js)."""
    example = (CONTRACTS_DIR / "examples" / "ExampleConsumer.sol").read_text()
    out = compile_sources({"Noop.sol": NOOP_CONSUMER, "examples/ExampleConsumer.sol": example})
    return {
        "noop": out["Noop.sol"]["NoopConsumer"],
        "example": out["examples/ExampleConsumer.sol"]["ExampleConsumer"],
    }


def track_item(n: int, request_id: bytes, offchain_id: bytes | None = None) -> TrackItem:
    """The ``n``-th registration of the batches: hashes and CID of its own."""
    codec = 0x55 if n % 2 else 0x70  # raw (a file of one chunk) or dag-pb
    cid = cid_to_str(bytes((1, codec, 0x12, 32)) + keccak(b"file %d" % n))
    return TrackItem(
        to_hex(request_id),
        Track(to_hex(keccak(b"audio %d" % n)), cid),
        Provenance.of(keccak(b"manifest %d" % n)),
        None if offchain_id is None else to_hex(offchain_id),
    )


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
        deployment = await deploy_registry(w3, key, account.address, FEE, RECLAIM_AFTER_BLOCKS)
        deploy = await w3.eth.get_transaction_receipt(deployment.tx_hash)
        api = Registry(w3, deployment.address)
        reg = api.contract
        functions = reg.functions

        async def request(prompt: str, lyrics: str) -> tuple[bytes, int]:
            call = functions.requestGeneration(prompt, lyrics, 30)
            receipt = await send(w3, account, call, FEE)
            (event,) = reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
            return bytes(event["args"]["requestId"]), receipt["gasUsed"]

        async def with_options(variations: int | None) -> int:
            asked = encode_options(bpm=80, key="F# minor", tags=["lo-fi"], variations=variations)
            call = functions.requestGenerationWithOptions(TYPICAL_PROMPT, "", 30, asked)
            return (await send(w3, account, call, FEE * (variations or 1)))["gasUsed"]

        typical_id, typical_gas = await request(TYPICAL_PROMPT, "")
        _, largest_gas = await request("p" * 1000, "l" * 4096)
        failing_id, _ = await request(TYPICAL_PROMPT, "")
        second_id, _ = await request(TYPICAL_PROMPT, "")
        canceled_id, _ = await request(TYPICAL_PROMPT, "")
        reclaimed_id, _ = await request(TYPICAL_PROMPT, "")
        options_gas = {n: await with_options(n) for n in (None, 2, 3, 4)}  # not the first

        register = await send(
            w3,
            account,
            functions.registerTrack(typical_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID),
        )
        # The first registration's fee turns collectedFees from zero to non-zero (a 20k
        # SSTORE); every later one, and every registerTracks batch below, finds it non-zero.
        second = await send(
            w3,
            account,
            functions.registerTrack(second_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID),
        )
        http = functions.registerOffchainTrack(
            b"\x01" * 32, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
        )
        offchain = await send(w3, account, http)
        fail = await send(w3, account, functions.markFailed(failing_id, "generation failed"))
        (failed,) = reg.events.GenerationFailed().process_receipt(fail, errors=DISCARD)
        if failed["args"]["refund"] != FEE:
            raise RuntimeError(f"markFailed refunded {failed['args']['refund']}, not {FEE}")
        cancel = await send(w3, account, api.cancel_request(canceled_id))
        # The delay has passed when the head is past it: gas is estimated in the head block.
        await w3.provider.make_request(RPCEndpoint("anvil_mine"), [hex(RECLAIM_AFTER_BLOCKS)])
        reclaim = await send(w3, account, api.reclaim(reclaimed_id))
        for receipt in (cancel, reclaim):
            (canceled,) = reg.events.RequestCanceled().process_receipt(receipt, errors=DISCARD)
            if canceled["args"]["refund"] != FEE:
                raise RuntimeError(f"RequestCanceled refunded {canceled['args']['refund']}")
        verify = await functions.verify(typical_id, AUDIO_HASH).estimate_gas()
        # The views rebuild the CID strings from the stored digests: what an on-chain caller pays.
        track_of = await functions.trackOf(typical_id).estimate_gas()
        provenance_of = await functions.provenanceOf(typical_id).estimate_gas()

        batches: dict[str, dict[str, int | float]] = {}
        n = 0
        callbacks = await measure_callbacks(w3, account, api)
        for size in BATCH_SIZES:
            for kind in ("chain", "offchain"):
                items = []
                for _ in range(size):
                    if kind == "chain":
                        items.append(track_item(n, (await request(TYPICAL_PROMPT, ""))[0]))
                    else:
                        offchain_id = keccak(b"offchain %d" % n)
                        rid = await functions.offchainRequestId(offchain_id).call()
                        items.append(track_item(n, rid, offchain_id))
                    n += 1
                fees_before = await functions.collectedFees().call()
                receipt = await send(w3, account, api.register_tracks(items))
                if skipped := api.skipped(receipt):
                    raise RuntimeError(f"registerTracks skipped {skipped}")
                collected = await functions.collectedFees().call() - fees_before
                if collected != (FEE * size if kind == "chain" else 0):
                    raise RuntimeError(f"registerTracks collected {collected} wei for {size}")
                batches[f"{size}_{kind}"] = {
                    "total": receipt["gasUsed"],
                    "per_track": round(receipt["gasUsed"] / size, 1),
                }

        return {
            "chain_id": chain_id,
            "contract": deployment.address,
            "request_fee_wei": FEE,
            "gas_used": {
                "deploy": deploy["gasUsed"],
                "requestGeneration_typical_60_char_prompt_no_lyrics": typical_gas,
                # Priced by EIP-7623's calldata floor, not by what it executes:
                "requestGeneration_1000_byte_prompt_4096_byte_lyrics": largest_gas,
                "requestGenerationWithOptions_bpm_key_one_tag": options_gas[None],
                **{
                    f"requestGenerationWithOptions_same_{n}_variations": options_gas[n]
                    for n in (2, 3, 4)
                },
                "registerTrack_59_char_cid": register["gasUsed"],
                "registerTrack_59_char_cid_fees_already_collected": second["gasUsed"],
                "registerOffchainTrack_59_char_cid": offchain["gasUsed"],
                "markFailed_with_refund": fail["gasUsed"],
                "cancelRequest_with_refund": cancel["gasUsed"],
                "reclaim_with_refund": reclaim["gasUsed"],
                "verify_eth_estimateGas": verify,
                "trackOf_eth_estimateGas": track_of,
                "provenanceOf_eth_estimateGas": provenance_of,
            },
            "registerTracks_gas_used": batches,
            "callbacks_gas_used": callbacks,
        }
    finally:
        await w3.provider.disconnect()


async def measure_callbacks(w3: AsyncWeb3, account: LocalAccount, api: Registry) -> dict[str, Any]:
    """Gas of plain and callback requests from one requester contract, and of their
    registrations: alone (``collectedFees`` already non-zero) and 50 in one batch."""
    functions = api.contract.functions
    await send(w3, account, functions.setCallbackGasPrice(CALLBACK_GAS_PRICE))
    artifacts = consumers()
    deployed = {}
    for name, artifact in artifacts.items():
        factory = w3.eth.contract(
            abi=artifact["abi"], bytecode="0x" + artifact["evm"]["bytecode"]["object"]
        )
        receipt = await send(w3, account, factory.constructor(api.address))
        deployed[name] = w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    noop, example = deployed["noop"], deployed["example"]

    async def request(call: Any, value: int) -> tuple[bytes, int]:
        receipt = await send(w3, account, call, value)
        (event,) = api.requested(receipt)
        return bytes.fromhex(event["requestId"][2:]), receipt["gasUsed"]

    async def register(request_id: bytes, n: int) -> int:
        call = api.register_track(
            to_hex(request_id), track_item(n, request_id).track, Provenance.of(MANIFEST_HASH)
        )
        receipt = await send(w3, account, call)
        return int(receipt["gasUsed"])

    async def callback_request(gas_limit: int) -> tuple[bytes, int]:
        fee = await api.request_fee_with_callback(gas_limit)
        return await request(noop.functions.requestWithCallback(TYPICAL_PROMPT, gas_limit), fee)

    # The requester's first request sets its requestNonce from zero (a 22,100-gas slot):
    # made first and not counted, so that both measured requests find it non-zero.
    await request(noop.functions.request(TYPICAL_PROMPT), FEE)
    plain_id, plain_gas = await request(noop.functions.request(TYPICAL_PROMPT), FEE)
    noop_id, noop_gas = await callback_request(50_000)
    limit = await example.functions.CALLBACK_GAS_LIMIT().call()
    song_fee = await example.functions.songFee().call()
    song_id, song_gas = await request(example.functions.requestSong(TYPICAL_PROMPT, 30), song_fee)
    gas_used = {
        "requestGeneration_via_a_contract": plain_gas,
        "requestGenerationWithCallback_via_a_contract": noop_gas,
        "ExampleConsumer.requestSong": song_gas,
        "registerTrack_plain": await register(plain_id, 1000),
        "registerTrack_callback_noop_consumer": await register(noop_id, 1001),
        f"registerTrack_callback_ExampleConsumer_limit_{limit}": await register(song_id, 1002),
    }
    if await example.functions.audioHashOf(song_id).call() == b"\x00" * 32:
        raise RuntimeError("ExampleConsumer was not called back")
    batches: dict[str, dict[str, int | float]] = {}
    for kind in ("plain", "callback"):
        items = []
        for n in range(50):
            if kind == "plain":
                rid, _ = await request(noop.functions.request(TYPICAL_PROMPT), FEE)
            else:
                rid, _ = await callback_request(BATCH_CALLBACK_GAS)
            items.append(track_item(2000 + n + (50 if kind == "callback" else 0), rid))
        receipt = await send(w3, account, api.register_tracks(items))
        if skipped := api.skipped(receipt):
            raise RuntimeError(f"registerTracks skipped {skipped}")
        results = api.callback_results(receipt)
        if kind == "callback" and (len(results) != 50 or not all(results.values())):
            raise RuntimeError(f"callbacks of the batch: {results}")
        batches[f"50_chain_{kind}"] = {
            "total": receipt["gasUsed"],
            "per_track": round(receipt["gasUsed"] / 50, 1),
        }
    return {"gas_used": gas_used, "registerTracks_gas_used": batches}


def main() -> int:
    settings = load_settings(ChainSettings)
    print(json.dumps(asyncio.run(measure(settings.rpc_url)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
