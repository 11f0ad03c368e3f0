"""Callbacks of ``requestGenerationWithCallback``, on a private anvil per test.

Roles, anvil dev accounts: 0 deploys the registry (owner), 1 publishes, 2 deploys and drives
the consumer contracts. The consumers are compiled with solc-js: ``ExampleConsumer``
(``contracts/examples``) and ``TestConsumer`` below, whose ``mode`` says what its callback does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

from acesteps import registry as registry_module
from acesteps.chain import connect, deploy_registry
from acesteps.dev.contracts import CONTRACTS_DIR
from acesteps.dev.devchain import dev_key
from acesteps.dev.solc import compile_sources
from acesteps.ipfs.unixfs import keccak_block_cid
from acesteps.registry import Provenance, Registry, RequestStatus, Track, TrackItem
from acesteps.reverts import decode_revert
from publisher.errors import CallbackDeferred
from publisher.registrar import Registration, submit_batch
from publisher.txsender import TxSender
from publisher.txtypes import TxPolicy
from tests.integration.anvil import Anvil

FEE = 10**15
GAS_PRICE = 10**9  # wei per gas of a callback's limit
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
AUDIO_HASH = keccak(b"the bytes of a flac file")
MANIFEST_HASH = keccak(b"a generation manifest")
MANIFEST_CID = keccak_block_cid(MANIFEST_HASH)
RECORD, REVERT, BURN, BOMB, REENTER = range(5)

TEST_CONSUMER = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface IRegistry {
    function requestGeneration(string calldata, string calldata, uint32)
        external payable returns (bytes32);
    function requestGenerationWithCallback(string calldata, string calldata, uint32, uint32)
        external payable returns (bytes32);
    function registerTrack(bytes32, bytes32, string calldata, bytes32, string calldata) external;
    function cancelRequest(bytes32) external;
    function claimRefund() external;
    function markFailed(bytes32, string calldata) external;
}

/// A requester whose callback records its call (0), reverts (1), burns all its gas (2),
/// returns 300 kB of data (3) or calls the registry back (4).
contract TestConsumer {
    IRegistry public immutable registry;
    uint8 public immutable mode;
    uint256 public calls;
    bytes32 public calledId;
    bytes32 public calledHash;
    string public calledCid;
    uint256 public gasAtEntry;
    bytes32 public other; // a request of ours the reentering callback tries to cancel
    uint256 public reentered; // bits: registerTrack 1, cancel own 2, claimRefund 4,
                              // markFailed 8, cancel other 16

    constructor(IRegistry registry_, uint8 mode_) { registry = registry_; mode = mode_; }

    function request(uint32 gasLimit) external payable returns (bytes32) {
        return registry.requestGenerationWithCallback{value: msg.value}("a song", "", 30, gasLimit);
    }

    function requestPlain() external payable returns (bytes32) {
        return registry.requestGeneration{value: msg.value}("a song", "", 30);
    }

    function setOther(bytes32 id) external { other = id; }

    function onTrackRegistered(bytes32 requestId, bytes32 audioHash, string calldata cid) external {
        uint256 g = gasleft();
        if (mode == 1) revert("no thanks");
        if (mode == 2) { while (true) {} }
        if (mode == 3) { assembly { return(0, 300000) } }
        gasAtEntry = g;
        calls += 1;
        calledId = requestId;
        calledHash = audioHash;
        calledCid = cid;
        if (mode == 4) {
            uint256 bits;
            try registry.registerTrack(requestId, audioHash, cid, bytes32(uint256(1)), "") {
                bits |= 1;
            } catch {}
            try registry.cancelRequest(requestId) { bits |= 2; } catch {}
            try registry.claimRefund() { bits |= 4; } catch {}
            try registry.markFailed(requestId, "no") { bits |= 8; } catch {}
            if (other != bytes32(0)) { try registry.cancelRequest(other) { bits |= 16; } catch {} }
            reentered = bits;
        }
    }

    receive() external payable {}
}

/// Asks for a callback from its constructor: it has no code yet.
contract ConstructorRequester {
    constructor(IRegistry registry) payable {
        registry.requestGenerationWithCallback{value: msg.value}("a song", "", 30, 50000);
    }
}
"""


@cache
def compiled() -> dict[str, Any]:
    example = (CONTRACTS_DIR / "examples" / "ExampleConsumer.sol").read_text()
    out: dict[str, Any] = compile_sources(
        {"TestConsumer.sol": TEST_CONSUMER, "examples/ExampleConsumer.sol": example}
    )
    return {
        "TestConsumer": out["TestConsumer.sol"]["TestConsumer"],
        "ConstructorRequester": out["TestConsumer.sol"]["ConstructorRequester"],
        "ExampleConsumer": out["examples/ExampleConsumer.sol"]["ExampleConsumer"],
    }


@dataclass
class Chain:
    w3: AsyncWeb3[Any]
    api: Registry
    owner: LocalAccount
    publisher: LocalAccount
    user: LocalAccount

    @property
    def reg(self) -> AsyncContract:
        return self.api.contract

    async def send(
        self, call: Any, sender: LocalAccount, value: int = 0, gas: int | None = None
    ) -> TxReceipt:
        params: dict[str, Any] = {
            "from": sender.address,
            "value": value,
            "nonce": await self.w3.eth.get_transaction_count(sender.address, "pending"),
        }
        if gas is not None:
            params["gas"] = gas
        tx = await call.build_transaction(params)
        signed = sender.sign_transaction(tx)
        tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1, f"transaction {tx_hash.to_0x_hex()} reverted"
        return receipt

    async def deploy(self, name: str, *args: Any, value: int = 0) -> AsyncContract:
        artifact = compiled()[name]
        factory = self.w3.eth.contract(
            abi=artifact["abi"], bytecode="0x" + artifact["evm"]["bytecode"]["object"]
        )
        receipt = await self.send(factory.constructor(*args), self.user, value)
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    async def consumer(self, mode: int) -> AsyncContract:
        return await self.deploy("TestConsumer", self.reg.address, mode)

    async def request(self, consumer: AsyncContract, gas_limit: int) -> bytes:
        """A callback request of ``consumer``'s; its id."""
        fee = await self.api.request_fee_with_callback(gas_limit)
        receipt = await self.send(consumer.functions.request(gas_limit), self.user, fee)
        (event,) = self.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
        assert event["args"]["requester"] == consumer.address
        return bytes(event["args"]["requestId"])

    def register_call(self, request_id: bytes, audio_hash: bytes = AUDIO_HASH) -> Any:
        return self.reg.functions.registerTrack(
            request_id, audio_hash, CID, MANIFEST_HASH, MANIFEST_CID
        )

    async def register(self, request_id: bytes, gas: int | None = None) -> TxReceipt:
        return await self.send(self.register_call(request_id), self.publisher, gas=gas)

    def results(self, receipt: TxReceipt) -> dict[str, bool]:
        return self.api.callback_results(receipt)


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    node = Anvil(tmp_path).start()
    w3 = connect(node.url)
    try:
        owner, publisher, user = (Account.from_key(dev_key(i)) for i in (0, 1, 2))
        deployment = await deploy_registry(w3, dev_key(0), publisher.address, FEE, 20)
        api = Registry(w3, deployment.address)
        chain = Chain(w3, api, owner, publisher, user)
        await chain.send(api.contract.functions.setCallbackGasPrice(GAS_PRICE), owner)
        yield chain
    finally:
        await w3.provider.disconnect()
        node.stop()


def hex_id(request_id: bytes) -> str:
    return "0x" + request_id.hex()


async def revert_of(call: Any, sender: str, value: int = 0, gas: int | None = None) -> tuple:
    params: dict[str, Any] = {"from": sender, "value": value}
    if gas is not None:
        params["gas"] = gas
    with pytest.raises(ContractCustomError) as info:
        await call.call(params)
    return decode_revert(registry_module.abi(), info.value.data)


# ---------------------------------------------------------------------- requesting


async def test_a_callback_request_pays_for_its_gas_and_stores_the_limit(chain: Chain) -> None:
    consumer = await chain.consumer(RECORD)
    assert await chain.api.request_fee_with_callback(100_000) == FEE + 100_000 * GAS_PRICE
    call = consumer.functions.request(100_000)
    expected = FEE + 100_000 * GAS_PRICE
    for sent in (FEE, expected - 1, expected + 1):
        assert await revert_of(call, chain.user.address, sent) == ("WrongFee", (expected, sent))

    rid = await chain.request(consumer, 100_000)
    assert await chain.api.callback_gas_limit(rid) == 100_000
    values = await chain.reg.functions.requests(rid).call()
    assert values[:4] == [consumer.address, RequestStatus.PENDING, 0, expected]
    # A plain request stores 0 in the same slot as its block.
    plain = await chain.send(consumer.functions.requestPlain(), chain.user, FEE)
    (event,) = chain.reg.events.GenerationRequested().process_receipt(plain, errors=DISCARD)
    assert await chain.api.callback_gas_limit(event["args"]["requestId"]) == 0


@pytest.mark.parametrize("limit", [0, 500_001, 2**32 - 1])
async def test_the_callback_gas_limit_is_1_to_500000(chain: Chain, limit: int) -> None:
    consumer = await chain.consumer(RECORD)
    assert await chain.reg.functions.MAX_CALLBACK_GAS_LIMIT().call() == 500_000
    fee = FEE + limit * GAS_PRICE
    call = consumer.functions.request(limit)
    assert await revert_of(call, chain.user.address, fee) == ("BadCallbackGasLimit", (limit,))


async def test_an_account_without_code_cannot_ask_for_a_callback(chain: Chain) -> None:
    # An EOA would be "called back" with nothing run, for gas it paid: refused up front.
    call = chain.api.request_generation_with_callback("a song", "", 30, 50_000)
    fee = await chain.api.request_fee_with_callback(50_000)
    name, args = await revert_of(call, chain.user.address, fee)
    assert (name, AsyncWeb3.to_checksum_address(args[0])) == ("NotAContract", chain.user.address)
    # So is a contract still in its constructor (it has no code yet).
    artifact = compiled()["ConstructorRequester"]
    factory = chain.w3.eth.contract(
        abi=artifact["abi"], bytecode="0x" + artifact["evm"]["bytecode"]["object"]
    )
    tx = await factory.constructor(chain.reg.address).build_transaction(
        {"from": chain.user.address, "value": fee, "gas": 1_000_000}
    )
    with pytest.raises(ContractCustomError) as info:
        await chain.w3.eth.call({"from": chain.user.address, "value": fee, "data": tx["data"]})
    name, _ = decode_revert(registry_module.abi(), info.value.data)
    assert name == "NotAContract"


async def test_a_callback_fee_that_overflows_the_stored_fee_is_refused(chain: Chain) -> None:
    consumer = await chain.consumer(RECORD)
    price = 2**80 - 1
    await chain.send(chain.reg.functions.setCallbackGasPrice(price), chain.owner)
    fee = FEE + 2 * price
    balance = hex(4 * price)
    await chain.w3.provider.make_request("anvil_setBalance", [chain.user.address, balance])  # type: ignore[arg-type]
    assert await revert_of(consumer.functions.request(2), chain.user.address, fee) == (
        "FeeTooLarge",
        (fee,),
    )
    too_high = chain.reg.functions.setCallbackGasPrice(2**80)
    assert await revert_of(too_high, chain.owner.address) == ("FeeTooLarge", (2**80,))
    assert await revert_of(chain.reg.functions.setCallbackGasPrice(1), chain.user.address) == (
        "NotOwner",
        (),
    )


# ---------------------------------------------------------------------- calling back


async def test_the_example_consumer_gets_the_hash_and_cid(chain: Chain) -> None:
    consumer = await chain.deploy("ExampleConsumer", chain.reg.address)
    limit = await consumer.functions.CALLBACK_GAS_LIMIT().call()
    fee = await consumer.functions.songFee().call()
    assert fee == FEE + limit * GAS_PRICE
    receipt = await chain.send(
        consumer.functions.requestSong("rain on a tin roof", 30), chain.user, fee
    )
    (event,) = chain.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    rid = bytes(event["args"]["requestId"])
    assert await consumer.functions.lastRequestId().call() == rid
    assert await consumer.functions.audioHashOf(rid).call() == b"\x00" * 32

    registered = await chain.register(rid)
    assert chain.results(registered) == {hex_id(rid): True}
    assert await consumer.functions.audioHashOf(rid).call() == AUDIO_HASH
    assert await consumer.functions.songs(rid).call() == [AUDIO_HASH, CID]
    (ready,) = consumer.events.SongReady().process_receipt(registered, errors=DISCARD)
    assert (ready["args"]["audioHash"], ready["args"]["cid"]) == (AUDIO_HASH, CID)
    assert await chain.reg.functions.verify(rid, AUDIO_HASH).call() is True
    # The whole fee, the callback's gas included, is collected for the owner.
    assert await chain.reg.functions.collectedFees().call() == fee

    # Only the registry may call it back.
    fake = consumer.functions.onTrackRegistered(rid, keccak(b"forged"), CID)
    with pytest.raises(ContractCustomError):
        await fake.call({"from": chain.user.address})


async def test_the_callback_runs_after_the_registration_with_exactly_its_gas(
    chain: Chain,
) -> None:
    consumer = await chain.consumer(RECORD)
    rid = await chain.request(consumer, 200_000)
    call = chain.register_call(rid)
    estimate = await call.estimate_gas({"from": chain.publisher.address})
    # Less gas than the callback needs: the registration reverts rather than starve it.
    short = await revert_of(call, chain.publisher.address, gas=estimate - 20_000)
    assert short == ("CallbackGasShort", (rid,))
    # eth_estimateGas accounts for the callback's whole limit: its estimate, with no margin,
    # gives the callee its full 200,000.
    receipt = await chain.register(rid, gas=estimate)
    assert chain.results(receipt) == {hex_id(rid): True}
    gas_at_entry = await consumer.functions.gasAtEntry().call()
    assert 200_000 - 1_000 < gas_at_entry <= 200_000
    assert await consumer.functions.calledId().call() == rid
    assert await consumer.functions.calledHash().call() == AUDIO_HASH
    assert await consumer.functions.calledCid().call() == CID
    # The events come in order: the registration's, then the callback's.
    names = [
        name
        for log in receipt["logs"]
        for name in ("TrackRegistered", "TrackProvenance", "CallbackResult")
        if log["topics"][0].to_0x_hex() == registry_module.event_topic(name)
    ]
    assert names == ["TrackRegistered", "TrackProvenance", "CallbackResult"]


@pytest.mark.parametrize("mode", [REVERT, BURN, BOMB])
async def test_a_failing_callback_never_undoes_the_registration(chain: Chain, mode: int) -> None:
    consumer = await chain.consumer(mode)
    limit = 500_000
    rid = await chain.request(consumer, limit)
    receipt = await chain.register(rid)
    assert chain.results(receipt) == {hex_id(rid): mode == BOMB}  # the bomb returns normally
    assert await chain.api.status(rid) == RequestStatus.REGISTERED
    assert await chain.api.track_of(rid) == Track("0x" + AUDIO_HASH.hex(), CID)
    assert await consumer.functions.calls().call() == 0
    if mode == BURN:  # it used its whole limit, and no more
        assert limit < receipt["gasUsed"] < limit + 250_000
    if mode == BOMB:  # 300 kB of return data, never copied: the registry pays nothing for it
        bomb_gas = receipt["gasUsed"]
        plain = await chain.register(await chain.request(await chain.consumer(RECORD), limit))
        assert bomb_gas < plain["gasUsed"] + 250_000


async def test_a_callback_that_calls_the_registry_back_changes_nothing(chain: Chain) -> None:
    consumer = await chain.consumer(REENTER)
    rid = await chain.request(consumer, 400_000)
    # A plain request of the consumer's, pending: the one thing the callback may legitimately
    # do is cancel it, as its requester.
    plain = await chain.send(consumer.functions.requestPlain(), chain.user, FEE)
    (event,) = chain.reg.events.GenerationRequested().process_receipt(plain, errors=DISCARD)
    other = bytes(event["args"]["requestId"])
    await chain.send(consumer.functions.setOther(other), chain.user)
    collected = await chain.reg.functions.collectedFees().call()

    receipt = await chain.register(rid)
    assert chain.results(receipt) == {hex_id(rid): True}
    # registerTrack: not a publisher; cancel of its registered request: not pending;
    # markFailed: not a publisher; claimRefund: nothing owed, nothing moves.
    assert await consumer.functions.reentered().call() == 4 | 16
    assert await chain.api.status(rid) == RequestStatus.REGISTERED
    assert await chain.api.track_of(rid) == Track("0x" + AUDIO_HASH.hex(), CID)
    fee = FEE + 400_000 * GAS_PRICE
    assert await chain.reg.functions.collectedFees().call() == collected + fee
    assert await chain.api.status(other) == RequestStatus.CANCELED
    # The registry holds exactly the collected fees: nothing was paid out twice.
    assert await chain.w3.eth.get_balance(chain.reg.address) == collected + fee
    assert await chain.reg.functions.deferredRefunds(consumer.address).call() == 0


async def test_a_batch_registers_every_item_before_any_callback(chain: Chain) -> None:
    # The first item's callback tries to cancel the second item's request: in the batch,
    # that request is already registered, so the cancel fails and both registrations stand.
    reenter, record = await chain.consumer(REENTER), await chain.consumer(RECORD)
    first = await chain.request(reenter, 300_000)
    plain = await chain.send(reenter.functions.requestPlain(), chain.user, FEE)
    (event,) = chain.reg.events.GenerationRequested().process_receipt(plain, errors=DISCARD)
    second = bytes(event["args"]["requestId"])
    await chain.send(reenter.functions.setOther(second), chain.user)
    third = await chain.request(record, 200_000)
    items = [item(n, rid) for n, rid in enumerate((first, second, third))]

    receipt = await chain.send(chain.api.register_tracks(items), chain.publisher)
    assert chain.api.skipped(receipt) == {}
    assert chain.results(receipt) == {hex_id(first): True, hex_id(third): True}
    assert await reenter.functions.reentered().call() == 4  # the cancel of `second` failed
    for n, rid in enumerate((first, second, third)):
        assert await chain.api.status(rid) == RequestStatus.REGISTERED
        assert await chain.api.track_of(rid) == items[n].track
    assert await record.functions.calledHash().call() == bytes.fromhex(
        items[2].track.audio_hash[2:]
    )


def item(n: int, request_id: bytes) -> TrackItem:
    return TrackItem(
        hex_id(request_id),
        Track("0x" + keccak(b"audio %d" % n).hex(), CID),
        Provenance.of(keccak(b"manifest %d" % n)),
    )


async def test_a_batch_gives_out_at_most_its_callback_budget(chain: Chain) -> None:
    assert await chain.reg.functions.MAX_BATCH_CALLBACK_GAS().call() == 1_000_000
    consumer = await chain.consumer(BURN)
    ids = [await chain.request(consumer, 400_000) for _ in range(3)]
    receipt = await chain.send(
        chain.api.register_tracks([item(n, rid) for n, rid in enumerate(ids)]), chain.publisher
    )
    # 400,000 + 400,000 fit in 1,000,000; the third would not: skipped, still pending.
    assert chain.api.skipped(receipt) == {hex_id(ids[2]): "CallbackOverBudget"}
    assert chain.results(receipt) == {hex_id(ids[0]): False, hex_id(ids[1]): False}
    assert await chain.api.status(ids[2]) == RequestStatus.PENDING
    again = await chain.send(chain.api.register_tracks([item(2, ids[2])]), chain.publisher)
    assert chain.results(again) == {hex_id(ids[2]): False}
    assert await chain.api.status(ids[2]) == RequestStatus.REGISTERED


async def test_a_failed_callback_request_refunds_the_callback_gas_too(chain: Chain) -> None:
    consumer = await chain.consumer(RECORD)
    rid = await chain.request(consumer, 100_000)
    receipt = await chain.send(chain.api.mark_failed(rid, "out of memory"), chain.publisher)
    (failed,) = chain.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert failed["args"]["refund"] == FEE + 100_000 * GAS_PRICE
    assert await chain.w3.eth.get_balance(consumer.address) == FEE + 100_000 * GAS_PRICE
    assert await consumer.functions.calls().call() == 0  # no callback for a failure


# ---------------------------------------------------------------------- the publisher


async def test_the_publisher_registers_callback_requests_and_defers_past_the_budget(
    chain: Chain,
) -> None:
    # No gas margin: the node's estimate alone must cover the callbacks.
    sender = TxSender(chain.w3, dev_key(1), TxPolicy(poll_interval_s=0.02, gas_margin=1.0))
    example = await chain.deploy("ExampleConsumer", chain.reg.address)
    fee = await example.functions.songFee().call()
    receipt = await chain.send(example.functions.requestSong("a song", 30), chain.user, fee)
    (event,) = chain.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    song = bytes(event["args"]["requestId"])
    burner = await chain.consumer(BURN)
    big = [await chain.request(burner, 450_000) for _ in range(2)]
    items = [item(0, song), item(1, big[0]), item(2, big[1])]

    finish = await submit_batch(chain.api, sender, items, 1)
    first, second, third = await finish()
    assert isinstance(first, Registration) and isinstance(second, Registration)
    assert isinstance(third, CallbackDeferred)  # 150,000 + 450,000 + 450,000 > 1,000,000
    assert await example.functions.audioHashOf(song).call() == bytes.fromhex(
        items[0].track.audio_hash[2:]
    )
    mined = await chain.w3.eth.get_transaction_receipt(first.tx_hash)  # type: ignore[arg-type]
    assert chain.results(mined) == {hex_id(song): True, hex_id(big[0]): False}

    # Sent again (as the loop retries it), it is registered.
    (retried,) = await (await submit_batch(chain.api, sender, items[2:], 1))()
    assert isinstance(retried, Registration) and not retried.already
    assert await chain.api.status(big[1]) == RequestStatus.REGISTERED
