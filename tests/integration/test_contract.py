"""AceStepsRegistry's rules, checked against the real anvil with web3.py 8 (async).

Every test deploys its own registry. The accounts are anvil's dev accounts 5..8 (owner,
publisher, requester, stranger), so their nonces never collide with others' use of 0..4;
``bench/contract_gas.py`` uses 9. Balance changes are read at the block before and the block
of one transaction (anvil mines one block per transaction), so concurrent users of the same
anvil cannot disturb them.

Failure paths are checked with ``eth_call`` from the sender: web3.py raises
`ContractCustomError` with the revert data, which `revert_of` decodes against the errors of
the committed ABI (4-byte selector of ``Name(types)``, then the ABI-encoded arguments).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

from acesteps import registry
from acesteps.chain import connect, deploy_registry
from acesteps.dev import contracts
from acesteps.dev.devchain import dev_key
from acesteps.dev.solc import compile_sources
from acesteps.registry import Registry, offchain_request_id, request_id_of
from acesteps.reverts import decode_revert
from acesteps.settings import CommonSettings

FEE = 10**15  # 0.001 ether
ZERO_HASH = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
AUDIO_HASH = keccak(b"the bytes of a flac file")
OTHER_HASH = keccak(b"the bytes of another file")
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # CIDv1 base32, 59 chars
MANIFEST_HASH = keccak(b"the canonical bytes of a generation manifest")
MANIFEST_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


class Status(IntEnum):
    NONE = 0
    PENDING = 1
    REGISTERED = 2
    FAILED = 3


# ---------------------------------------------------------------------- custom errors


def error_selector(name: str, abi: list[dict[str, Any]] | None = None) -> bytes:
    """The 4-byte selector of the custom error ``name``, from the ABI's input types."""
    (item,) = [e for e in abi or registry.abi() if e["type"] == "error" and e["name"] == name]
    types = ",".join(i["type"] for i in item["inputs"])
    return keccak(text=f"{name}({types})")[:4]


def decode_error(data: str | bytes) -> tuple[str, tuple]:
    """``(name, args)`` of the custom error whose selector starts the revert data."""
    name, args = decode_revert(registry.abi(), data)
    assert name not in ("unknown", "Error", "Panic"), f"not a custom error: {name} {args}"
    return name, args


async def revert_of(call: Any, sender: LocalAccount, value: int = 0) -> tuple[str, tuple]:
    """Simulate ``call`` from ``sender``; it must revert with a custom error: its name, args."""
    with pytest.raises(ContractCustomError) as info:
        await call.call({"from": sender.address, "value": value})
    assert isinstance(info.value.data, str)
    return decode_error(info.value.data)


def test_error_helper_matches_known_selectors() -> None:
    # NotOwner() and WrongFee(uint256,uint256), computed by hand from their signatures.
    assert error_selector("NotOwner") == keccak(b"NotOwner()")[:4] == bytes.fromhex("30cd7471")
    data = keccak(b"WrongFee(uint256,uint256)")[:4] + (5).to_bytes(32) + (7).to_bytes(32)
    assert decode_error("0x" + data.hex()) == ("WrongFee", (5, 7))
    with pytest.raises(AssertionError, match="not a custom error"):
        decode_error("0xdeadbeef")


# ---------------------------------------------------------------------- fixtures


@dataclass
class Chain:
    """One fresh registry and the accounts that play its roles."""

    w3: AsyncWeb3
    reg: AsyncContract
    owner: LocalAccount
    publisher: LocalAccount
    requester: LocalAccount
    stranger: LocalAccount

    @classmethod
    async def deploy(cls, w3: AsyncWeb3, fee: int = 0) -> Chain:
        owner, publisher, requester, stranger = (Account.from_key(dev_key(i)) for i in (5, 6, 7, 8))
        deployment = await deploy_registry(w3, dev_key(5), publisher.address, fee)
        return cls(
            w3, Registry(w3, deployment.address).contract, owner, publisher, requester, stranger
        )

    async def send(self, call: Any, sender: LocalAccount, value: int = 0) -> TxReceipt:
        """Sign and send ``call``; the receipt, which must show success."""
        tx = await call.build_transaction(
            {
                "from": sender.address,
                "value": value,
                "nonce": await self.w3.eth.get_transaction_count(sender.address, "pending"),
            }
        )
        signed = sender.sign_transaction(tx)
        tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1, f"transaction {tx_hash.to_0x_hex()} reverted"
        return receipt

    async def request(
        self,
        prompt: str = "a calm piano piece",
        lyrics: str = "",
        duration: int = 30,
        *,
        sender: LocalAccount | None = None,
        value: int | None = None,
    ) -> bytes:
        """Send requestGeneration; the request id from its GenerationRequested event."""
        receipt = await self.send(
            self.reg.functions.requestGeneration(prompt, lyrics, duration),
            sender or self.requester,
            await self.reg.functions.requestFee().call() if value is None else value,
        )
        (event,) = self.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
        return bytes(event["args"]["requestId"])

    async def register(self, request_id: bytes, audio_hash: bytes = AUDIO_HASH) -> TxReceipt:
        call = self.reg.functions.registerTrack(
            request_id, audio_hash, CID, MANIFEST_HASH, MANIFEST_CID
        )
        return await self.send(call, self.publisher)

    async def fail(self, request_id: bytes, reason: str = "generation failed") -> TxReceipt:
        return await self.send(self.reg.functions.markFailed(request_id, reason), self.publisher)

    async def status(self, request_id: bytes) -> Status:
        return Status((await self.reg.functions.requests(request_id).call())[1])

    async def balance_change(self, address: str, receipt: TxReceipt) -> int:
        """How the balance of ``address`` changed in the block of ``receipt``."""
        block = receipt["blockNumber"]
        after = await self.w3.eth.get_balance(address, block)
        return after - await self.w3.eth.get_balance(address, block - 1)


@pytest.fixture
async def w3(stack: CommonSettings) -> AsyncIterator[AsyncWeb3]:
    web3 = connect(stack.rpc_url)
    assert await web3.eth.chain_id == 31337
    yield web3
    await web3.provider.disconnect()


@pytest.fixture
async def chain(w3: AsyncWeb3) -> Chain:
    """A registry without a request fee."""
    return await Chain.deploy(w3)


@pytest.fixture
async def paid(w3: AsyncWeb3) -> Chain:
    """A registry whose requests cost `FEE`."""
    return await Chain.deploy(w3, FEE)


def random_id() -> bytes:
    """An id never requested on chain, like the ids of requests that come over HTTP."""
    return keccak(os.urandom(32))


# ---------------------------------------------------------------------- the artifacts


def test_committed_artifacts_are_current() -> None:
    assert contracts.stale() == []


# ---------------------------------------------------------------------- requestGeneration


async def test_request_emits_generation_requested_with_exact_args(chain: Chain) -> None:
    call = chain.reg.functions.requestGeneration("lo-fi beat, rainy night", "la la la", 42)
    returned = await call.call({"from": chain.requester.address})
    receipt = await chain.send(call, chain.requester)

    (event,) = chain.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    assert event["address"] == chain.reg.address
    assert event["args"]["requestId"] == returned
    assert event["args"]["requester"] == chain.requester.address
    assert event["args"]["prompt"] == "lo-fi beat, rainy night"
    assert event["args"]["lyrics"] == "la la la"
    assert event["args"]["durationSeconds"] == 42
    # requestId and requester are the indexed topics.
    (log,) = receipt["logs"]
    assert log["topics"][1] == returned
    assert log["topics"][2][-20:] == bytes.fromhex(chain.requester.address[2:])
    assert await chain.reg.functions.requests(returned).call() == [
        chain.requester.address,
        Status.PENDING,
        0,
    ]


async def test_request_ids_are_unique_per_call(chain: Chain, w3: AsyncWeb3) -> None:
    ids = [await chain.request("same prompt") for _ in range(3)]
    ids.append(await chain.request("same prompt", sender=chain.stranger))
    other = await Chain.deploy(w3)
    ids.append(await other.request("same prompt"))

    assert len(set(ids)) == 5
    assert await chain.reg.functions.requestNonce(chain.requester.address).call() == 3
    assert all(len(i) == 32 for i in ids)


async def test_a_request_id_depends_only_on_what_the_requester_sent(chain: Chain) -> None:
    # Known before sending (so a dApp can follow it at once), and the same whatever block the
    # transaction lands in: the requester, its count of requests and the arguments.
    functions, me = chain.reg.functions, chain.requester.address
    expected = await functions.nextRequestId(me, "rain", "la", 30).call()
    assert expected != await functions.nextRequestId(me, "rain", "la", 31).call()
    assert await chain.request("rain", "la", 30) == expected
    nonce_salt = keccak(
        abi_encode(["uint256", "string", "string", "uint32"], [0, "rain", "la", 30])
    )
    assert "0x" + expected.hex() == request_id_of(31337, chain.reg.address, me, nonce_salt)

    # With a salt of the caller's choosing: requestIdOf(caller, salt), once.
    salt = keccak(b"my salt")
    salted = functions.requestGenerationWithSalt("rain", "", 30, salt)
    receipt = await chain.send(salted, chain.requester)
    (event,) = chain.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    rid = event["args"]["requestId"]
    assert rid == await functions.requestIdOf(me, salt).call()
    assert "0x" + rid.hex() == request_id_of(31337, chain.reg.address, me, salt)
    assert await revert_of(salted, chain.requester) == ("RequestExists", (rid,))
    # Another requester's salt is another id.
    assert await functions.requestIdOf(chain.stranger.address, salt).call() != rid


@pytest.mark.parametrize("duration", [4, 241, 0, 2**32 - 1])
async def test_duration_outside_5_to_240_seconds_reverts(chain: Chain, duration: int) -> None:
    call = chain.reg.functions.requestGeneration("a song", "", duration)
    assert await revert_of(call, chain.requester) == ("BadDuration", (duration,))


@pytest.mark.parametrize("duration", [5, 240])
async def test_duration_bounds_are_accepted(chain: Chain, duration: int) -> None:
    request_id = await chain.request(duration=duration)
    assert await chain.status(request_id) == Status.PENDING


async def test_empty_prompt_reverts(chain: Chain) -> None:
    call = chain.reg.functions.requestGeneration("", "some lyrics", 30)
    assert await revert_of(call, chain.requester) == ("EmptyPrompt", ())


async def test_prompt_is_limited_to_1000_bytes(chain: Chain) -> None:
    await chain.request("p" * 1000)
    await chain.request("é" * 500)  # 500 characters, 1000 bytes of UTF-8

    too_long = chain.reg.functions.requestGeneration("p" * 1001, "", 30)
    assert await revert_of(too_long, chain.requester) == ("PromptTooLong", (1001,))
    multibyte = chain.reg.functions.requestGeneration("é" * 500 + "x", "", 30)
    assert await revert_of(multibyte, chain.requester) == ("PromptTooLong", (1001,))


async def test_lyrics_are_limited_to_4096_bytes(chain: Chain) -> None:
    await chain.request(lyrics="l" * 4096)

    call = chain.reg.functions.requestGeneration("a song", "l" * 4097, 30)
    assert await revert_of(call, chain.requester) == ("LyricsTooLong", (4097,))


async def test_request_must_pay_exactly_the_fee(paid: Chain) -> None:
    call = paid.reg.functions.requestGeneration("a song", "", 30)
    for sent in (0, FEE - 1, FEE + 1):
        assert await revert_of(call, paid.requester, sent) == ("WrongFee", (FEE, sent))

    receipt = await paid.send(call, paid.requester, FEE)
    (event,) = paid.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    request_id = event["args"]["requestId"]
    assert await paid.reg.functions.requests(request_id).call() == [
        paid.requester.address,
        Status.PENDING,
        FEE,
    ]
    assert await paid.w3.eth.get_balance(paid.reg.address) == FEE


async def test_free_registry_refuses_payment(chain: Chain) -> None:
    call = chain.reg.functions.requestGeneration("a song", "", 30)
    assert await revert_of(call, chain.requester, 1) == ("WrongFee", (0, 1))


async def test_paused_registry_refuses_requests_until_unpaused(chain: Chain) -> None:
    receipt = await chain.send(chain.reg.functions.setPaused(True), chain.owner)
    (event,) = chain.reg.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["paused"] is True
    assert await chain.reg.functions.paused().call() is True

    call = chain.reg.functions.requestGeneration("a song", "", 30)
    assert await revert_of(call, chain.requester) == ("IsPaused", ())

    await chain.send(chain.reg.functions.setPaused(False), chain.owner)
    assert await chain.status(await chain.request()) == Status.PENDING


# ---------------------------------------------------------------------- roles


async def test_only_a_publisher_may_register_or_fail(chain: Chain) -> None:
    request_id = await chain.request()
    register = chain.reg.functions.registerTrack(
        request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    fail = chain.reg.functions.markFailed(request_id, "no")
    for account in (chain.stranger, chain.owner, chain.requester):  # the owner is no publisher
        assert await revert_of(register, account) == ("NotPublisher", ())
        assert await revert_of(fail, account) == ("NotPublisher", ())
    assert await chain.reg.functions.isPublisher(chain.publisher.address).call() is True
    assert await chain.status(request_id) == Status.PENDING


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("setPublisher", lambda c: (c.stranger.address, True)),
        ("setRequestFee", lambda c: (1,)),
        ("setPaused", lambda c: (True,)),
        ("transferOwnership", lambda c: (c.stranger.address,)),
        ("withdrawFees", lambda c: (c.stranger.address,)),
    ],
)
async def test_only_the_owner_may_administer(chain: Chain, function: str, args: Any) -> None:
    call = chain.reg.functions[function](*args(chain))
    for account in (chain.stranger, chain.publisher, chain.requester):
        assert await revert_of(call, account) == ("NotOwner", ())
    await chain.send(call, chain.owner)  # the same call from the owner succeeds


async def test_owner_adds_and_removes_publishers(chain: Chain) -> None:
    new = chain.stranger
    first, second = await chain.request(), await chain.request()
    assert await revert_of(
        chain.reg.functions.registerTrack(first, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID), new
    ) == (
        "NotPublisher",
        (),
    )

    receipt = await chain.send(chain.reg.functions.setPublisher(new.address, True), chain.owner)
    (event,) = chain.reg.events.PublisherSet().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["account"], event["args"]["allowed"]) == (new.address, True)
    await chain.send(
        chain.reg.functions.registerTrack(first, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID), new
    )
    assert await chain.status(first) == Status.REGISTERED

    receipt = await chain.send(chain.reg.functions.setPublisher(new.address, False), chain.owner)
    (event,) = chain.reg.events.PublisherSet().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["account"], event["args"]["allowed"]) == (new.address, False)
    assert await chain.reg.functions.isPublisher(new.address).call() is False
    register = chain.reg.functions.registerTrack(
        second, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(register, new) == ("NotPublisher", ())
    fail = chain.reg.functions.markFailed(second, "no")
    assert await revert_of(fail, new) == ("NotPublisher", ())
    await chain.send(register, chain.publisher)  # the original publisher still may

    zero = chain.reg.functions.setPublisher(ZERO_ADDRESS, True)
    assert await revert_of(zero, chain.owner) == ("ZeroAddress", ())


async def test_transfer_ownership_moves_every_owner_right(chain: Chain) -> None:
    assert await chain.reg.functions.owner().call() == chain.owner.address
    receipt = await chain.send(
        chain.reg.functions.transferOwnership(chain.stranger.address), chain.owner
    )
    (event,) = chain.reg.events.OwnershipTransferred().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["previousOwner"] == chain.owner.address
    assert event["args"]["newOwner"] == chain.stranger.address
    assert await chain.reg.functions.owner().call() == chain.stranger.address

    pause = chain.reg.functions.setPaused(True)
    assert await revert_of(pause, chain.owner) == ("NotOwner", ())
    await chain.send(pause, chain.stranger)
    assert await chain.reg.functions.paused().call() is True

    zero = chain.reg.functions.transferOwnership(ZERO_ADDRESS)
    assert await revert_of(zero, chain.stranger) == ("ZeroAddress", ())


# ---------------------------------------------------------------------- registerTrack


async def test_register_rejects_zero_hash_and_bad_cids(chain: Chain) -> None:
    request_id = await chain.request()
    functions, publisher = chain.reg.functions, chain.publisher

    zero = functions.registerTrack(request_id, ZERO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
    assert await revert_of(zero, publisher) == ("ZeroHash", ())
    empty = functions.registerTrack(request_id, AUDIO_HASH, "", MANIFEST_HASH, MANIFEST_CID)
    assert await revert_of(empty, publisher) == ("BadCid", ())
    long = functions.registerTrack(request_id, AUDIO_HASH, "b" * 129, MANIFEST_HASH, MANIFEST_CID)
    assert await revert_of(long, publisher) == ("BadCid", ())
    assert await chain.status(request_id) == Status.PENDING

    await chain.send(
        functions.registerTrack(request_id, AUDIO_HASH, "b" * 128, MANIFEST_HASH, MANIFEST_CID),
        publisher,
    )
    assert await functions.trackOf(request_id).call() == [AUDIO_HASH, "b" * 128]


async def test_on_chain_request_is_registered_once(chain: Chain) -> None:
    request_id = await chain.request()
    receipt = await chain.register(request_id)

    (event,) = chain.reg.events.TrackRegistered().process_receipt(receipt, errors=DISCARD)
    assert event["address"] == chain.reg.address
    assert event["args"]["requestId"] == request_id
    assert event["args"]["audioHash"] == AUDIO_HASH
    assert event["args"]["cid"] == CID
    assert await chain.status(request_id) == Status.REGISTERED

    again = chain.reg.functions.registerTrack(
        request_id, OTHER_HASH, CID + "x", MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(again, chain.publisher) == ("AlreadyRegistered", (request_id,))
    assert await chain.reg.functions.trackOf(request_id).call() == [AUDIO_HASH, CID]


async def test_an_id_never_requested_on_chain_is_refused_by_register_track(chain: Chain) -> None:
    # What a request that vanished in a reorg looks like: no phantom registration.
    vanished = random_id()
    register = chain.reg.functions.registerTrack(
        vanished, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(register, chain.publisher) == ("NotPending", (vanished,))


async def test_http_request_is_registered_once_under_its_off_chain_id(chain: Chain) -> None:
    offchain_id = random_id()
    http_id = await chain.reg.functions.offchainRequestId(offchain_id).call()
    assert "0x" + http_id.hex() == offchain_request_id(31337, chain.reg.address, offchain_id)
    assert await chain.status(http_id) == Status.NONE
    call = chain.reg.functions.registerOffchainTrack(
        offchain_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await call.call({"from": chain.publisher.address}) == http_id
    receipt = await chain.send(call, chain.publisher)

    (event,) = chain.reg.events.TrackRegistered().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["requestId"], event["args"]["audioHash"]) == (http_id, AUDIO_HASH)
    assert await chain.reg.functions.trackOf(http_id).call() == [AUDIO_HASH, CID]
    assert await chain.status(http_id) == Status.NONE  # it never was an on-chain request

    assert await revert_of(call, chain.publisher) == ("AlreadyRegistered", (http_id,))
    again = chain.reg.functions.registerTrack(http_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
    assert await revert_of(again, chain.publisher) == ("AlreadyRegistered", (http_id,))
    fail = chain.reg.functions.markFailed(http_id, "too late")
    assert await revert_of(fail, chain.publisher) == ("NotPending", (http_id,))
    for account in (chain.stranger, chain.owner):
        assert await revert_of(call, account) == ("NotPublisher", ())


async def test_off_chain_ids_never_meet_chain_ids(chain: Chain) -> None:
    # A chain request's id cannot be registered as an off-chain one: the contract derives
    # the off-chain id's request id in a domain of its own.
    request_id = await chain.request()
    derived = await chain.reg.functions.offchainRequestId(request_id).call()
    assert derived != request_id
    await chain.fail(request_id)
    offchain = chain.reg.functions.registerOffchainTrack(
        request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    await chain.send(offchain, chain.publisher)
    assert await chain.reg.functions.trackOf(request_id).call() == [ZERO_HASH, ""]
    assert await chain.reg.functions.trackOf(derived).call() == [AUDIO_HASH, CID]


async def test_failed_request_cannot_be_registered(chain: Chain) -> None:
    request_id = await chain.request()
    await chain.fail(request_id)

    register = chain.reg.functions.registerTrack(
        request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(register, chain.publisher) == ("NotPending", (request_id,))
    assert await chain.reg.functions.trackOf(request_id).call() == [ZERO_HASH, ""]


async def test_track_of_and_verify(chain: Chain) -> None:
    registered, pending, unknown = await chain.request(), await chain.request(), random_id()
    await chain.register(registered)
    track_of, verify = chain.reg.functions.trackOf, chain.reg.functions.verify

    assert await track_of(registered).call() == [AUDIO_HASH, CID]
    assert await verify(registered, AUDIO_HASH).call() is True
    assert await verify(registered, OTHER_HASH).call() is False
    assert await verify(registered, ZERO_HASH).call() is False
    # No track yet: its stored hash is zero, and zero must not verify.
    assert await track_of(pending).call() == [ZERO_HASH, ""]
    assert await verify(pending, ZERO_HASH).call() is False
    assert await verify(pending, AUDIO_HASH).call() is False
    assert await track_of(unknown).call() == [ZERO_HASH, ""]
    assert await verify(unknown, AUDIO_HASH).call() is False
    assert await verify(unknown, ZERO_HASH).call() is False


# ---------------------------------------------------------------------- fees and refunds


async def test_mark_failed_refunds_exactly_the_fee(paid: Chain) -> None:
    request_id = await paid.request()
    receipt = await paid.fail(request_id, "out of GPU memory")

    (event,) = paid.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["requestId"] == request_id
    assert event["args"]["reason"] == "out of GPU memory"
    assert event["args"]["refund"] == FEE
    assert paid.reg.events.RefundDeferred().process_receipt(receipt, errors=DISCARD) == ()
    assert await paid.balance_change(paid.requester.address, receipt) == FEE
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await paid.balance_change(paid.publisher.address, receipt) == -gas_cost
    assert await paid.balance_change(paid.reg.address, receipt) == -FEE
    assert await paid.w3.eth.get_balance(paid.reg.address) == 0
    assert await paid.status(request_id) == Status.FAILED
    assert await paid.reg.functions.collectedFees().call() == 0


async def test_refund_is_the_fee_paid_even_after_the_fee_changes(paid: Chain) -> None:
    request_id = await paid.request()
    await paid.send(paid.reg.functions.setRequestFee(3 * FEE), paid.owner)
    assert await paid.reg.functions.requestFee().call() == 3 * FEE

    receipt = await paid.fail(request_id)
    (event,) = paid.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["refund"] == FEE
    assert await paid.balance_change(paid.requester.address, receipt) == FEE


async def test_free_request_fails_without_refund(chain: Chain) -> None:
    request_id = await chain.request()
    receipt = await chain.fail(request_id)
    (event,) = chain.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["refund"] == 0
    assert await chain.balance_change(chain.requester.address, receipt) == 0


async def test_failure_reason_is_cut_to_256_bytes(chain: Chain) -> None:
    request_id = await chain.request()
    receipt = await chain.fail(request_id, "r" * 300)
    (event,) = chain.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["reason"] == "r" * 256


async def test_mark_failed_only_once_and_only_when_pending(paid: Chain) -> None:
    failed, registered = await paid.request(), await paid.request()
    await paid.fail(failed)
    await paid.register(registered)

    for request_id in (failed, registered, random_id()):
        call = paid.reg.functions.markFailed(request_id, "again")
        assert await revert_of(call, paid.publisher) == ("NotPending", (request_id,))
    assert await paid.status(registered) == Status.REGISTERED
    assert await paid.reg.functions.collectedFees().call() == FEE


REJECTING_REQUESTER = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface IAceStepsRegistry {
    function requestGeneration(string calldata prompt, string calldata lyrics, uint32 seconds_)
        external payable returns (bytes32);
    function claimRefund() external;
}

/// A requester that refuses ether until told to accept it.
contract RejectingRequester {
    IAceStepsRegistry public immutable registry;
    bool public accepting;

    constructor(IAceStepsRegistry registry_) { registry = registry_; }

    function request(string calldata prompt) external payable returns (bytes32) {
        return registry.requestGeneration{value: msg.value}(prompt, "", 30);
    }

    function claim() external { registry.claimRefund(); }

    function setAccepting(bool value) external { accepting = value; }

    receive() external payable { require(accepting, "not accepting ether"); }
}
"""


@cache
def rejecting_requester() -> dict[str, Any]:
    out: dict[str, Any] = compile_sources({"Rejecting.sol": REJECTING_REQUESTER})
    return out["Rejecting.sol"]["RejectingRequester"]


async def test_refund_to_a_rejecting_contract_is_deferred_then_claimed(paid: Chain) -> None:
    artifact = rejecting_requester()
    factory = paid.w3.eth.contract(
        abi=artifact["abi"], bytecode="0x" + artifact["evm"]["bytecode"]["object"]
    )
    deployed = await paid.send(factory.constructor(paid.reg.address), paid.stranger)
    requester = paid.w3.eth.contract(address=deployed["contractAddress"], abi=artifact["abi"])

    receipt = await paid.send(requester.functions.request("a song"), paid.stranger, FEE)
    (event,) = paid.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["requester"] == requester.address
    request_id = event["args"]["requestId"]

    receipt = await paid.fail(request_id)
    (failed,) = paid.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert failed["args"]["refund"] == FEE
    (deferred,) = paid.reg.events.RefundDeferred().process_receipt(receipt, errors=DISCARD)
    assert (deferred["args"]["requester"], deferred["args"]["amount"]) == (requester.address, FEE)
    assert await paid.reg.functions.deferredRefunds(requester.address).call() == FEE
    assert await paid.w3.eth.get_balance(requester.address) == 0
    assert await paid.w3.eth.get_balance(paid.reg.address) == FEE
    assert await paid.status(request_id) == Status.FAILED

    # Still refusing: the claim reverts and the refund stays owed.
    assert await revert_of(requester.functions.claim(), paid.stranger) == ("TransferFailed", ())

    await paid.send(requester.functions.setAccepting(True), paid.stranger)
    receipt = await paid.send(requester.functions.claim(), paid.stranger)
    assert await paid.balance_change(requester.address, receipt) == FEE
    assert await paid.reg.functions.deferredRefunds(requester.address).call() == 0
    assert await paid.w3.eth.get_balance(paid.reg.address) == 0

    # Nothing is owed any more: claiming again moves nothing.
    receipt = await paid.send(requester.functions.claim(), paid.stranger)
    assert await paid.balance_change(requester.address, receipt) == 0


async def test_withdraw_fees_takes_only_fees_of_registered_requests(paid: Chain) -> None:
    registered_a, registered_b = await paid.request(), await paid.request()
    pending, failed = await paid.request(), await paid.request()
    await paid.register(registered_a)
    await paid.register(registered_b)
    offchain = paid.reg.functions.registerOffchainTrack(
        random_id(), AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    await paid.send(offchain, paid.publisher)  # an HTTP request: no fee
    await paid.fail(failed)
    assert await paid.reg.functions.collectedFees().call() == 2 * FEE
    assert await paid.w3.eth.get_balance(paid.reg.address) == 3 * FEE

    to = Account.create().address  # a fresh address with nothing on it
    receipt = await paid.send(paid.reg.functions.withdrawFees(to), paid.owner)
    (event,) = paid.reg.events.FeesWithdrawn().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["to"], event["args"]["amount"]) == (to, 2 * FEE)
    assert await paid.w3.eth.get_balance(to) == 2 * FEE
    assert await paid.reg.functions.collectedFees().call() == 0
    assert await paid.w3.eth.get_balance(paid.reg.address) == FEE  # the pending request's fee
    assert await paid.status(pending) == Status.PENDING

    receipt = await paid.send(paid.reg.functions.withdrawFees(to), paid.owner)
    assert await paid.balance_change(to, receipt) == 0
    zero = paid.reg.functions.withdrawFees(ZERO_ADDRESS)
    assert await revert_of(zero, paid.owner) == ("ZeroAddress", ())


async def test_fee_above_uint96_is_stored_and_refunded_in_full(chain: Chain) -> None:
    huge = 2**96 + 1  # would wrap to 1 wei if the fee were kept in 96 bits
    rich: LocalAccount = Account.create()
    await chain.w3.provider.make_request("anvil_setBalance", [rich.address, hex(2 * huge)])
    await chain.send(chain.reg.functions.setRequestFee(huge), chain.owner)

    request_id = await chain.request(sender=rich)
    assert (await chain.reg.functions.requests(request_id).call())[2] == huge
    receipt = await chain.fail(request_id)
    assert await chain.balance_change(rich.address, receipt) == huge


# ---------------------------------------------------------------------- gas


async def test_gas_used_by_the_main_calls(paid: Chain) -> None:
    functions = paid.reg.functions
    short = await paid.send(
        functions.requestGeneration("a calm piano piece", "", 30), paid.requester, FEE
    )
    long = await paid.send(
        functions.requestGeneration("p" * 1000, "l" * 1000, 240), paid.requester, FEE
    )
    (event,) = paid.reg.events.GenerationRequested().process_receipt(short, errors=DISCARD)
    register = await paid.register(event["args"]["requestId"])
    gas = {
        "requestGeneration(short prompt)": short["gasUsed"],
        "requestGeneration(1000 B prompt + 1000 B lyrics)": long["gasUsed"],
        "registerTrack(59-char CID, MANIFEST_HASH, MANIFEST_CID)": register["gasUsed"],
    }
    print("\ngas used:", gas)
    assert all(21_000 < used < 1_000_000 for used in gas.values())
    assert (
        gas["requestGeneration(1000 B prompt + 1000 B lyrics)"]
        > gas["requestGeneration(short prompt)"]
    )


# ---------------------------------------------------------------------- provenance


async def test_provenance_is_registered_with_the_track_once(chain: Chain) -> None:
    request_id = await chain.request()
    assert await chain.reg.functions.provenanceOf(request_id).call() == [ZERO_HASH, ""]
    receipt = await chain.register(request_id)

    (event,) = chain.reg.events.TrackProvenance().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["requestId"] == request_id
    assert (event["args"]["manifestHash"], event["args"]["manifestCid"]) == (
        MANIFEST_HASH,
        MANIFEST_CID,
    )
    assert await chain.reg.functions.provenanceOf(request_id).call() == [
        MANIFEST_HASH,
        MANIFEST_CID,
    ]
    # The old getters, unchanged.
    assert await chain.reg.functions.trackOf(request_id).call() == [AUDIO_HASH, CID]
    assert await chain.reg.functions.verify(request_id, AUDIO_HASH).call() is True
    (registered,) = chain.reg.events.TrackRegistered().process_receipt(receipt, errors=DISCARD)
    assert registered["args"]["audioHash"] == AUDIO_HASH
    # Written once: no second registration, so no other manifest either.
    other = chain.reg.functions.registerTrack(request_id, AUDIO_HASH, CID, OTHER_HASH, CID)
    assert await revert_of(other, chain.publisher) == ("AlreadyRegistered", (request_id,))
    assert (await chain.reg.functions.provenanceOf(request_id).call())[0] == MANIFEST_HASH


async def test_only_a_publisher_records_provenance_and_it_must_be_real(chain: Chain) -> None:
    request_id = await chain.request()
    functions = chain.reg.functions
    for account in (chain.stranger, chain.owner, chain.requester):
        call = functions.registerTrack(request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
        assert await revert_of(call, account) == ("NotPublisher", ())
    no_hash = functions.registerTrack(request_id, AUDIO_HASH, CID, ZERO_HASH, MANIFEST_CID)
    assert await revert_of(no_hash, chain.publisher) == ("ZeroHash", ())
    for bad in ("", "b" * 129):
        bad_cid = functions.registerTrack(request_id, AUDIO_HASH, CID, MANIFEST_HASH, bad)
        assert await revert_of(bad_cid, chain.publisher) == ("BadCid", ())
    http = functions.registerOffchainTrack(random_id(), AUDIO_HASH, CID, ZERO_HASH, MANIFEST_CID)
    assert await revert_of(http, chain.publisher) == ("ZeroHash", ())
    assert await chain.status(request_id) == Status.PENDING
