"""AceStepsRegistry's rules, checked against the real anvil with web3.py 8 (async).

Every test deploys its own registry. The accounts are anvil's dev accounts 5..8 (owner,
publisher, requester, stranger), so their nonces never collide with others' use of 0..4;
``bench/contract_gas.py`` uses 9. Balance changes are read at the block before and the block
of one transaction (anvil mines one block per transaction), so concurrent users of the same
anvil cannot disturb them. The test that needs exact block numbers (``reclaim``'s delay) runs
on a private anvil that mines only when told.

Failure paths are checked with ``eth_call`` from the sender: web3.py raises
`ContractCustomError` with the revert data, which `revert_of` decodes against the errors of
the committed ABI (4-byte selector of ``Name(types)``, then the ABI-encoded arguments).
"""

from __future__ import annotations

import os
import re
from base64 import b32decode
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

from acesteps import registry
from acesteps.chain import DEFAULT_RECLAIM_AFTER_BLOCKS, connect, deploy_registry
from acesteps.chainoptions import encode_options
from acesteps.dev import contracts
from acesteps.dev.devchain import dev_key
from acesteps.dev.solc import compile_sources
from acesteps.ipfs.unixfs import cid_of_bytes, cid_to_str, keccak_block_cid
from acesteps.messages import GenerationRequest
from acesteps.registry import (
    Provenance,
    Registry,
    RequestStatus,
    Track,
    TrackItem,
    offchain_request_id,
    request_id_of,
)
from acesteps.reverts import decode_revert
from acesteps.settings import CommonSettings
from acesteps.types import to_hex
from acesteps.variations import child_request, default_seed, variation_key, variation_seed
from listener import events
from listener.chainreader import RawLog
from tests.integration.anvil import Anvil

FEE = 10**15  # 0.001 ether
ZERO_HASH = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
AUDIO_HASH = keccak(b"the bytes of a flac file")
OTHER_HASH = keccak(b"the bytes of another file")
# Multiformats codes: CID codecs and multihash functions.
RAW, DAG_PB, DAG_CBOR = 0x55, 0x70, 0x71
SHA2_256, SHA3_256, KECCAK_256 = 0x12, 0x16, 0x1B
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648, lower case: multibase "b"


def cid_of(codec: int, digest: bytes, hash_function: int = SHA2_256, version: int = 1) -> str:
    """The base32 text of the CID <version><codec><hash function><digest length><digest>
    (every code here below 0x80, so each is a one-byte varint)."""
    return cid_to_str(bytes((version, codec, hash_function, len(digest))) + digest)


CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"  # CIDv1 dag-pb sha2-256
OTHER_CID = cid_of(DAG_PB, keccak(b"the DAG of another file"))
RAW_CID = cid_of_bytes(b"a small file: one raw block")  # "bafkrei..."
MANIFEST_HASH = keccak(b"the canonical bytes of a generation manifest")
MANIFEST_CID = keccak_block_cid(MANIFEST_HASH)  # CIDv1 raw keccak-256: the hash, spelled out
OTHER_MANIFEST_HASH = keccak(b"another generation manifest")


class Status(IntEnum):
    NONE = 0
    PENDING = 1
    REGISTERED = 2
    FAILED = 3
    CANCELED = 4


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
    api: Registry  # the typed wrapper of ``reg``
    requested_at: dict[bytes, int] = field(default_factory=dict)
    """request id -> the block of its requestGeneration (`request`)."""

    @classmethod
    async def deploy(
        cls, w3: AsyncWeb3, fee: int = 0, reclaim_after_blocks: int = DEFAULT_RECLAIM_AFTER_BLOCKS
    ) -> Chain:
        owner, publisher, requester, stranger = (Account.from_key(dev_key(i)) for i in (5, 6, 7, 8))
        deployment = await deploy_registry(
            w3, dev_key(5), publisher.address, fee, reclaim_after_blocks
        )
        assert deployment.reclaim_after_blocks == reclaim_after_blocks
        api = Registry(w3, deployment.address)
        return cls(w3, api.contract, owner, publisher, requester, stranger, api)

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
        request_id = bytes(event["args"]["requestId"])
        self.requested_at[request_id] = receipt["blockNumber"]
        return request_id

    async def request_with_options(
        self,
        options: tuple[Any, ...],
        prompt: str = "a calm piano piece",
        lyrics: str = "",
        duration: int = 30,
        *,
        sender: LocalAccount | None = None,
        value: int | None = None,
    ) -> tuple[bytes, TxReceipt]:
        """Send requestGenerationWithOptions paying ``requestFeeFor(model)`` per track (or
        ``value``): the request id from its (first) GenerationRequested event, and the
        receipt."""
        tracks = max(1, options[11])
        fee = await self.reg.functions.requestFeeFor(options[9]).call() * tracks
        receipt = await self.send(
            self.reg.functions.requestGenerationWithOptions(prompt, lyrics, duration, options),
            sender or self.requester,
            fee if value is None else value,
        )
        event, *variations = self.reg.events.GenerationRequested().process_receipt(
            receipt, errors=DISCARD
        )
        assert len(variations) == tracks - 1
        request_id = bytes(event["args"]["requestId"])
        self.requested_at[request_id] = receipt["blockNumber"]
        return request_id, receipt

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


async def test_the_contract_says_its_version(chain: Chain) -> None:
    assert await chain.reg.functions.VERSION().call() == "1.3.0"
    assert await chain.api.version() == "1.3.0"


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
    # requester, status, the CID's codec (set on registration), fee: one slot; then the
    # request's block, where the delay of reclaim starts, and its callback's gas (0: none).
    assert await chain.reg.functions.requests(returned).call() == [
        chain.requester.address,
        Status.PENDING,
        0,
        0,
        receipt["blockNumber"],
        0,  # no callback
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
        0,
        FEE,
        receipt["blockNumber"],
        0,
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


# ---------------------------------------------------------------------- requests with options

# The contract's `Options`, as the services decode `RequestOptions.options`.
OPTIONS_TYPE = "(bool,uint32,string,uint16,string,uint8,string,bool,string[],string,string,uint8)"
# (hasSeed, seed, format, bpm, key, timeSignature, vocalLanguage, instrumental, tags, model,
#  preset, variations)
NO_OPTIONS = (False, 0, "", 0, "", 0, "", False, (), "", "", 0)  # nothing asked: the defaults
OPTIONS = (
    True, 42, "flac", 120, "F# minor", 4, "en", False, ("lo-fi", "piano", "rain"), "", "lofi", 0
)  # fmt: skip


def with_model(options: tuple[Any, ...], model: str) -> tuple[Any, ...]:
    return (*options[:9], model, *options[10:])


def with_preset(options: tuple[Any, ...], preset: str) -> tuple[Any, ...]:
    return (*options[:10], preset, *options[11:])


def with_variations(options: tuple[Any, ...], variations: int) -> tuple[Any, ...]:
    return (*options[:11], variations)


def all_options_of(chain: Chain, receipt: TxReceipt) -> list[tuple[bytes, tuple[Any, ...]]]:
    """The request id and the decoded options of each RequestOptions event of ``receipt``."""
    logs = [
        entry
        for entry in receipt["logs"]
        if entry["topics"][0].to_0x_hex() == registry.event_topic("RequestOptions")
    ]
    events = chain.reg.events.RequestOptions().process_receipt(receipt, errors=DISCARD)
    assert len(events) == len(logs)
    found = []
    for log, event in zip(logs, events, strict=True):
        assert log["address"] == chain.reg.address
        data = bytes(event["args"]["options"])
        (decoded,) = abi_decode([OPTIONS_TYPE], data)
        assert abi_encode([OPTIONS_TYPE], [decoded]) == data  # exactly abi.encode(options)
        found.append((bytes(log["topics"][1]), decoded))
    return found


def options_of(chain: Chain, receipt: TxReceipt) -> tuple[bytes, tuple[Any, ...]]:
    """The request id and the decoded options of the receipt's RequestOptions event (the
    request's own: its variations, if any, have theirs after it)."""
    return all_options_of(chain, receipt)[0]


async def test_an_options_request_announces_its_options_after_the_request(chain: Chain) -> None:
    functions, me = chain.reg.functions, chain.requester.address
    call = functions.requestGenerationWithOptions(
        "lo-fi beat, rainy night", "la la la", 42, OPTIONS
    )
    expected = await functions.nextRequestIdWithOptions(
        me, "lo-fi beat, rainy night", "la la la", 42, OPTIONS
    ).call()
    assert await call.call({"from": me}) == expected
    receipt = await chain.send(call, chain.requester)

    # GenerationRequested exactly as requestGeneration emits it, then RequestOptions.
    requested, announced = receipt["logs"]
    assert requested["topics"][0].to_0x_hex() == registry.event_topic("GenerationRequested")
    assert announced["topics"][0].to_0x_hex() == registry.event_topic("RequestOptions")
    assert announced["logIndex"] == requested["logIndex"] + 1
    (event,) = chain.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {
        "requestId": expected,
        "requester": me,
        "prompt": "lo-fi beat, rainy night",
        "lyrics": "la la la",
        "durationSeconds": 42,
    }
    assert options_of(chain, receipt) == (expected, OPTIONS)
    assert await chain.reg.functions.requests(expected).call() == [
        me,
        Status.PENDING,
        0,
        0,
        receipt["blockNumber"],
        0,  # no callback
    ]


async def test_an_options_request_id_depends_on_its_options_too(chain: Chain) -> None:
    functions, me = chain.reg.functions, chain.requester.address
    prompt, lyrics, duration = "rain", "la", 30
    expected = await functions.nextRequestIdWithOptions(
        me, prompt, lyrics, duration, OPTIONS
    ).call()
    # Another option, another model, nothing asked, or no options at all: another id.
    others = [
        await functions.nextRequestIdWithOptions(me, prompt, lyrics, duration, other).call()
        for other in (
            (False, *OPTIONS[1:]),
            (*OPTIONS[:8], ("lo-fi", "piano"), *OPTIONS[9:]),
            with_model(OPTIONS, "xl"),
            with_preset(OPTIONS, "orchestral"),
            with_preset(OPTIONS, ""),
            with_variations(OPTIONS, 2),
            NO_OPTIONS,
        )
    ]
    others.append(await functions.nextRequestId(me, prompt, lyrics, duration).call())
    assert len({expected, *others}) == 9

    # The salt: the requester's count, the arguments and keccak256(abi.encode(options)).
    options_hash = keccak(abi_encode([OPTIONS_TYPE], [OPTIONS]))
    salt = keccak(
        abi_encode(
            ["uint256", "string", "string", "uint32", "bytes32"],
            [0, prompt, lyrics, duration, options_hash],
        )
    )
    assert "0x" + expected.hex() == request_id_of(31337, chain.reg.address, me, salt)
    request_id, _ = await chain.request_with_options(OPTIONS, prompt, lyrics, duration)
    assert request_id == expected

    # One count for every kind of request: the same arguments again get another id.
    assert await functions.requestNonce(me).call() == 1
    plain = await chain.request(prompt, lyrics, duration)
    assert plain != others[-1]  # the count moved on: nonce 1, not 0
    again, _ = await chain.request_with_options(OPTIONS, prompt, lyrics, duration)
    assert again not in (expected, plain)
    assert await functions.requestNonce(me).call() == 3
    # Another requester with the same arguments: another id.
    stranger_id, _ = await chain.request_with_options(
        OPTIONS, prompt, lyrics, duration, sender=chain.stranger
    )
    assert stranger_id not in (expected, again)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one registry for all
)
@given(
    options=st.tuples(
        st.booleans(),
        st.integers(0, 2**32 - 1),
        st.text(max_size=20),
        st.integers(0, 2**16 - 1),
        st.text(max_size=20),
        st.integers(0, 255),
        st.text(max_size=10),
        st.booleans(),
        st.lists(st.text(max_size=30), max_size=6).map(tuple),
        st.text(max_size=30),
        st.text(max_size=30),
        st.integers(0, 4),
    )
)
@example(options=NO_OPTIONS)
@example(options=with_variations(OPTIONS, 4))
async def test_any_options_come_back_from_the_event_as_sent(
    chain: Chain, options: tuple[Any, ...]
) -> None:
    # The contract checks none of them (but the model's fee and the count of variations): the
    # services do.
    me = chain.requester.address
    expected = await chain.reg.functions.nextRequestIdWithOptions(
        me, "a song", "", 30, options
    ).call()
    request_id, receipt = await chain.request_with_options(options, "a song")
    assert options_of(chain, receipt) == (request_id, options)
    assert request_id == expected


async def test_an_options_request_is_checked_like_any_request(paid: Chain) -> None:
    def call(prompt: str = "a song", lyrics: str = "", duration: int = 30) -> Any:
        return paid.reg.functions.requestGenerationWithOptions(prompt, lyrics, duration, OPTIONS)

    me = paid.requester
    assert await revert_of(call(duration=4), me, FEE) == ("BadDuration", (4,))
    assert await revert_of(call(duration=241), me, FEE) == ("BadDuration", (241,))
    assert await revert_of(call(""), me, FEE) == ("EmptyPrompt", ())
    assert await revert_of(call("p" * 1001), me, FEE) == ("PromptTooLong", (1001,))
    assert await revert_of(call(lyrics="l" * 4097), me, FEE) == ("LyricsTooLong", (4097,))
    for sent in (0, FEE - 1, FEE + 1):
        assert await revert_of(call(), me, sent) == ("WrongFee", (FEE, sent))
    await paid.send(paid.reg.functions.setPaused(True), paid.owner)
    assert await revert_of(call(), me, FEE) == ("IsPaused", ())
    await paid.send(paid.reg.functions.setPaused(False), paid.owner)
    request_id, _ = await paid.request_with_options(OPTIONS, "p" * 1000, "l" * 4096, 240)
    assert await paid.status(request_id) == Status.PENDING
    assert await paid.reg.functions.requestNonce(me.address).call() == 1  # reverts count nothing


# ---------------------------------------------------------------------- model fees


async def test_a_request_for_a_model_with_a_fee_pays_that_fee(paid: Chain) -> None:
    functions = paid.reg.functions
    xl = with_model(OPTIONS, "xl")
    receipt = await paid.send(functions.setModelFee("xl", 3 * FEE), paid.owner)
    (event,) = paid.reg.events.ModelFeeSet().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"model": "xl", "fee": 3 * FEE, "set": True}
    assert await functions.requestFeeFor("xl").call() == 3 * FEE
    # The default model (""), a model without a fee, and requestGeneration: requestFee.
    for model in ("", "base", "XL", "xl "):
        assert await functions.requestFeeFor(model).call() == FEE
    assert await functions.requestFee().call() == FEE

    call = functions.requestGenerationWithOptions("a song", "", 30, xl)
    for sent in (0, FEE, 3 * FEE - 1, 3 * FEE + 1):
        assert await revert_of(call, paid.requester, sent) == ("WrongFee", (3 * FEE, sent))
    request_id, receipt = await paid.request_with_options(xl, value=3 * FEE)
    assert (await functions.requests(request_id).call())[3] == 3 * FEE
    assert await paid.balance_change(paid.reg.address, receipt) == 3 * FEE
    # The preset changes no fee: the model's, with any preset or none.
    for preset in ("", "orchestral", "xl"):
        call_preset = functions.requestGenerationWithOptions(
            "a song", "", 30, with_preset(xl, preset)
        )
        assert await revert_of(call_preset, paid.requester, FEE) == ("WrongFee", (3 * FEE, FEE))
        request_id, _ = await paid.request_with_options(with_preset(xl, preset), value=3 * FEE)
        assert (await functions.requests(request_id).call())[3] == 3 * FEE
    request_id, _ = await paid.request_with_options(with_preset(NO_OPTIONS, "xl"), value=FEE)
    assert (await functions.requests(request_id).call())[3] == FEE  # a preset named as a model
    for options in (OPTIONS, with_model(OPTIONS, "base")):
        cheap = functions.requestGenerationWithOptions("a song", "", 30, options)
        assert await revert_of(cheap, paid.requester, 3 * FEE) == ("WrongFee", (FEE, 3 * FEE))
        request_id, _ = await paid.request_with_options(options, value=FEE)
        assert (await functions.requests(request_id).call())[3] == FEE
    assert (await functions.requests(await paid.request(value=FEE)).call())[3] == FEE

    # A model's fee stays when requestFee changes; a fee of 0 makes a model free.
    await paid.send(functions.setRequestFee(2 * FEE), paid.owner)
    assert await functions.requestFeeFor("xl").call() == 3 * FEE
    assert await functions.requestFeeFor("base").call() == 2 * FEE
    await paid.send(functions.setModelFee("small", 0), paid.owner)
    assert await functions.requestFeeFor("small").call() == 0
    request_id, _ = await paid.request_with_options(with_model(OPTIONS, "small"), value=0)
    assert (await functions.requests(request_id).call())[3] == 0

    # Cleared: requestFee again.
    receipt = await paid.send(functions.clearModelFee("xl"), paid.owner)
    (event,) = paid.reg.events.ModelFeeSet().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"model": "xl", "fee": 0, "set": False}
    assert await functions.requestFeeFor("xl").call() == 2 * FEE
    assert await revert_of(call, paid.requester, 3 * FEE) == ("WrongFee", (2 * FEE, 3 * FEE))
    request_id, _ = await paid.request_with_options(xl, value=2 * FEE)
    assert (await functions.requests(request_id).call())[3] == 2 * FEE


async def test_model_fees_need_a_model_and_fit_a_requests_fee(chain: Chain) -> None:
    functions = chain.reg.functions
    assert await revert_of(functions.setModelFee("", 1), chain.owner) == ("EmptyModel", ())
    assert await revert_of(functions.clearModelFee(""), chain.owner) == ("EmptyModel", ())
    for fee in (UINT80_MAX + 1, 2**256 - 1):
        call = functions.setModelFee("xl", fee)
        assert await revert_of(call, chain.owner) == ("FeeTooLarge", (fee,))
    assert await functions.requestFeeFor("xl").call() == 0
    await chain.send(functions.setModelFee("xl", UINT80_MAX), chain.owner)
    assert await functions.requestFeeFor("xl").call() == UINT80_MAX
    # Only the owner, even to clear (test_only_the_owner_may_administer checks the rest).
    for account in (chain.stranger, chain.publisher, chain.requester):
        assert await revert_of(functions.setModelFee("xl", 0), account) == ("NotOwner", ())
        assert await revert_of(functions.clearModelFee("xl"), account) == ("NotOwner", ())
    assert await functions.requestFeeFor("xl").call() == UINT80_MAX


async def test_an_options_request_is_refunded_what_it_paid(paid: Chain) -> None:
    functions = paid.reg.functions
    xl = with_model(OPTIONS, "xl")
    await paid.send(functions.setModelFee("xl", 3 * FEE), paid.owner)
    failed, _ = await paid.request_with_options(xl)
    canceled, _ = await paid.request_with_options(xl)
    registered, _ = await paid.request_with_options(xl)
    # Later prices change nothing for requests already made.
    await paid.send(functions.setModelFee("xl", 5 * FEE), paid.owner)
    await paid.send(functions.setRequestFee(7 * FEE), paid.owner)

    receipt = await paid.fail(failed, "unknown model")
    (event,) = paid.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["refund"] == 3 * FEE
    assert await paid.balance_change(paid.requester.address, receipt) == 3 * FEE
    assert await paid.status(failed) == Status.FAILED

    receipt = await paid.send(functions.cancelRequest(canceled), paid.requester)
    assert _canceled(paid, receipt)["refund"] == 3 * FEE
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await paid.balance_change(paid.requester.address, receipt) == 3 * FEE - gas_cost

    await paid.register(registered)
    assert await functions.collectedFees().call() == 3 * FEE
    assert await paid.w3.eth.get_balance(paid.reg.address) == 3 * FEE


# ---------------------------------------------------------------------- variations


def raw_logs(receipt: TxReceipt) -> list[RawLog]:
    """The receipt's logs as the listener reads them."""
    return [
        RawLog(
            address=str(log["address"]),
            block_number=int(log["blockNumber"]),
            block_hash=to_hex(log["blockHash"]),
            tx_hash=to_hex(log["transactionHash"]),
            log_index=int(log["logIndex"]),
            topics=tuple(to_hex(t) for t in log["topics"]),
            data=bytes(log["data"]),
        )
        for log in receipt["logs"]
    ]


async def test_a_request_with_variations_pays_one_fee_per_track(paid: Chain) -> None:
    functions, me = paid.reg.functions, paid.requester
    assert await functions.MAX_VARIATIONS().call() == 4

    def call(options: tuple[Any, ...]) -> Any:
        return functions.requestGenerationWithOptions("a song", "", 30, options)

    three = with_variations(OPTIONS, 3)
    for sent in (0, FEE, 3 * FEE - 1, 3 * FEE + 1, 4 * FEE):
        assert await revert_of(call(three), me, sent) == ("WrongFee", (3 * FEE, sent))
    for too_many in (5, 255):
        assert await revert_of(call(with_variations(OPTIONS, too_many)), me, too_many * FEE) == (
            "TooManyVariations",
            (too_many,),
        )
    # A model's fee, once per track.
    await paid.send(functions.setModelFee("xl", 2 * FEE), paid.owner)
    xl_two = with_model(with_variations(OPTIONS, 2), "xl")
    assert await revert_of(call(xl_two), me, 2 * FEE) == ("WrongFee", (4 * FEE, 2 * FEE))
    assert await functions.requestNonce(me.address).call() == 0  # reverts count nothing

    parent, receipt = await paid.request_with_options(three, "a song")
    assert await paid.balance_change(paid.reg.address, receipt) == 3 * FEE
    assert await functions.requestNonce(me.address).call() == 1  # one request of the caller's
    ids = [parent, *(bytes.fromhex(variation_key(to_hex(parent), k)[2:]) for k in (1, 2))]
    for request_id in ids:  # each pending with its share, from the request's block
        assert await functions.requests(request_id).call() == [
            me.address,
            Status.PENDING,
            0,
            FEE,
            receipt["blockNumber"],
            0,
        ]
    beyond = bytes.fromhex(variation_key(to_hex(parent), 3)[2:])
    assert (await functions.requests(beyond).call())[1] == Status.NONE
    _, receipt = await paid.request_with_options(xl_two, value=4 * FEE)
    requested = paid.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    assert len(requested) == 2
    for event in requested:
        assert (await functions.requests(event["args"]["requestId"]).call())[3] == 2 * FEE
    # 0 and 1: one track, one fee, no variation.
    for one in (0, 1):
        _, receipt = await paid.request_with_options(with_variations(OPTIONS, one), value=FEE)
        assert paid.reg.events.VariationRequested().process_receipt(receipt, errors=DISCARD) == ()
        assert len(all_options_of(paid, receipt)) == 1


async def test_variations_are_announced_as_requests_of_their_own(chain: Chain) -> None:
    functions, me = chain.reg.functions, chain.requester.address
    options = with_variations(OPTIONS, 4)  # seed 42
    expected = await functions.nextRequestIdWithOptions(me, "rain", "la", 42, options).call()
    parent, receipt = await chain.request_with_options(options, "rain", "la", 42)
    assert parent == expected
    children = [bytes.fromhex(variation_key(to_hex(parent), k)[2:]) for k in (1, 2, 3)]

    # The request as without variations, then each variation: GenerationRequested,
    # RequestOptions, VariationRequested.
    names = {
        registry.event_topic(e["name"]): e["name"] for e in registry.abi() if e["type"] == "event"
    }
    order = [(names[to_hex(log["topics"][0])], bytes(log["topics"][1])) for log in receipt["logs"]]
    assert order == [
        ("GenerationRequested", parent),
        ("RequestOptions", parent),
        *(
            (name, child)
            for child in children
            for name in ("GenerationRequested", "RequestOptions", "VariationRequested")
        ),
    ]
    requested = chain.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in requested] == [
        {"requestId": rid, "requester": me, "prompt": "rain", "lyrics": "la", "durationSeconds": 42}
        for rid in (parent, *children)
    ]
    # The variations' options: the request's, with variations 0 and the next seeds.
    assert all_options_of(chain, receipt) == [
        (parent, options),
        *((child, (True, 42 + k, *OPTIONS[2:11], 0)) for k, child in enumerate(children, 1)),
    ]
    announced = chain.reg.events.VariationRequested().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in announced] == [
        {"requestId": child, "parentId": parent, "index": k} for k, child in enumerate(children, 1)
    ]
    for k, child in enumerate(children, 1):
        assert await functions.parentOf(child).call() == [parent, k]
    for other in (parent, random_id(), await chain.request()):
        assert await functions.parentOf(other).call() == [ZERO_HASH, 0]


@pytest.mark.parametrize("seed", [None, 2**32 - 2], ids=["derived seed", "seed, wrapping"])
async def test_the_contracts_variations_are_the_ones_python_derives(
    chain: Chain, seed: int | None
) -> None:
    """The contract's variations, read by the listener, are `acesteps.variations.child_request`
    of the request it read: the same ids, seeds (the parent's effective seed + index, modulo
    2^32, the derived one `default_seed`) and options."""
    options = with_variations(encode_options(seed=seed, bpm=96, tags=("rain",)), 3)
    _, receipt = await chain.request_with_options(options, "a song")
    logs = raw_logs(receipt)
    paired, links = events.options_of(logs), events.variations_of(logs)
    parent, *children = [
        events.from_log(log, 31337, paired, links)
        for log in logs
        if events.request_id_of(log) is not None
    ]
    assert isinstance(parent, GenerationRequest) and parent.variations == 3
    assert parent.seed == seed
    seeds = []
    for index, child in enumerate(children, 1):
        assert isinstance(child, GenerationRequest)
        assert child.request_id == variation_key(parent.request_id, index)
        assert child.seed == variation_seed(parent, index)
        seeds.append(child.seed)
        python = child_request(parent, index, child.request_id)
        ignore = {"chain", "requested_at"}
        assert child.model_dump(exclude=ignore) == python.model_dump(exclude=ignore)
    if seed is None:
        base = default_seed(parent.request_id)
        assert seeds == [(base + 1) % 2**32, (base + 2) % 2**32]
    else:
        assert seeds == [2**32 - 1, 0]


async def test_each_variation_is_registered_refunded_or_canceled_on_its_own(paid: Chain) -> None:
    functions = paid.reg.functions
    parent, _ = await paid.request_with_options(with_variations(OPTIONS, 4))
    first, second, third = (bytes.fromhex(variation_key(to_hex(parent), k)[2:]) for k in (1, 2, 3))
    await paid.register(first, OTHER_HASH)
    assert await paid.api.track_of(first) == Track(to_hex(OTHER_HASH), CID)
    assert await functions.verify(first, OTHER_HASH).call()
    assert await paid.status(parent) == Status.PENDING  # the others: untouched
    register_again = functions.registerTrack(first, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
    assert await revert_of(register_again, paid.publisher) == ("AlreadyRegistered", (first,))

    receipt = await paid.fail(second, "no such preset")
    assert await paid.balance_change(paid.requester.address, receipt) == FEE  # its share
    assert await paid.status(second) == Status.FAILED

    stranger_cancel = functions.cancelRequest(third)
    assert await revert_of(stranger_cancel, paid.stranger) == ("NotRequester", (third,))
    receipt = await paid.send(functions.cancelRequest(third), paid.requester)
    assert _canceled(paid, receipt)["refund"] == FEE
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await paid.balance_change(paid.requester.address, receipt) == FEE - gas_cost
    assert await functions.reclaimableAt(third).call() == 0

    assert await functions.reclaimableAt(parent).call() == (
        paid.requested_at[parent] + DEFAULT_RECLAIM_AFTER_BLOCKS
    )
    await paid.register(parent)
    statuses = [await paid.status(r) for r in (parent, first, second, third)]
    assert statuses == [Status.REGISTERED, Status.REGISTERED, Status.FAILED, Status.CANCELED]
    assert await functions.collectedFees().call() == 2 * FEE
    assert await paid.w3.eth.get_balance(paid.reg.address) == 2 * FEE


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
        ("setModelFee", lambda c: ("xl", 1)),
        ("clearModelFee", lambda c: ("xl",)),
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


def _replaced(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


def _base58(data: bytes) -> str:
    """Bitcoin base58, the text of a CIDv0."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number, out = int.from_bytes(data), ""
    while number:
        number, digit = divmod(number, 58)
        out = alphabet[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + out


_DIGEST = b32decode(CID[1:].upper() + "======")[4:]  # CID's sha2-256 digest
_LETTER = next(i for i in range(10, len(CID)) if CID[i].isalpha())
_LAST = BASE32.index(CID[-1])  # its two low bits are padding: zero in a canonical CID

# What BadCid means for a track's file CID: anything but "b" + 58 characters of the lower-case
# base32 alphabet spelling CIDv1 (raw or dag-pb) sha2-256 with a 32-byte digest, zero padding.
BAD_CIDS: dict[str, str] = {
    "empty": "",
    "58 characters": CID[:-1],
    "60 characters": CID + "a",
    "128 characters (the old limit)": "b" * 128,
    "59 characters of b (padding bits set)": "b" * 59,
    "upper case (multibase B)": CID.upper(),
    "upper-case body": "b" + CID[1:].upper(),
    "one upper-case letter": _replaced(CID, _LETTER, CID[_LETTER].upper()),
    "no multibase prefix": CID[1:] + "a",
    "multibase base32hex (v)": "v" + CID[1:],
    "'1' (not base32)": _replaced(CID, 20, "1"),
    "'8' (not base32)": _replaced(CID, 20, "8"),
    "'0' (not base32)": _replaced(CID, 30, "0"),
    "'9' (not base32)": _replaced(CID, 40, "9"),
    "'=' (padding)": _replaced(CID, 58, "="),
    "' '": _replaced(CID, 5, " "),
    "'`' (below 'a')": _replaced(CID, 11, "`"),
    "'{' (above 'z')": _replaced(CID, 12, "{"),
    "'/'": _replaced(CID, 13, "/"),
    "a two-byte UTF-8 character (59 bytes)": CID[:20] + "é" + CID[22:],
    "low padding bit set": CID[:-1] + BASE32[_LAST | 1],
    "high padding bit set": CID[:-1] + BASE32[_LAST | 2],
    "both padding bits set": CID[:-1] + BASE32[_LAST | 3],
    "sha3-256 multihash": cid_of(RAW, _DIGEST, SHA3_256),
    "keccak-256 multihash (a manifest's CID)": cid_of(RAW, _DIGEST, KECCAK_256),
    "dag-cbor codec": cid_of(DAG_CBOR, _DIGEST),
    "digest length 31 in the multihash": cid_to_str(b"\x01\x70\x12\x1f" + _DIGEST),
    "CID version 0 in base32": cid_of(DAG_PB, _DIGEST, version=0),
    "CID version 2": cid_of(DAG_PB, _DIGEST, version=2),
    "CIDv0 (Qm..., base58)": _base58(b"\x12\x20" + _DIGEST),
}


def test_the_bad_cids_are_what_they_say() -> None:
    # The list is only meaningful if its cases differ from a good CID in the named way.
    assert cid_of(DAG_PB, _DIGEST) == CID
    assert cid_of(RAW, _DIGEST).startswith("bafkrei") and CID.startswith("bafybei")
    assert BAD_CIDS["CIDv0 (Qm..., base58)"].startswith("Qm")
    assert len(BAD_CIDS["CIDv0 (Qm..., base58)"]) == 46
    for name in ("sha3-256 multihash", "dag-cbor codec", "CID version 2", "'1' (not base32)"):
        assert len(BAD_CIDS[name]) == 59 and BAD_CIDS[name][0] == "b", name
    assert len(BAD_CIDS["a two-byte UTF-8 character (59 bytes)"].encode()) == 59
    assert len(set(BAD_CIDS.values())) == len(BAD_CIDS)


async def test_register_rejects_zero_hash_and_bad_cids(chain: Chain) -> None:
    request_id = await chain.request()
    functions, publisher = chain.reg.functions, chain.publisher

    zero = functions.registerTrack(request_id, ZERO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
    assert await revert_of(zero, publisher) == ("ZeroHash", ())
    for name, bad in BAD_CIDS.items():
        call = functions.registerTrack(request_id, AUDIO_HASH, bad, MANIFEST_HASH, MANIFEST_CID)
        assert await revert_of(call, publisher) == ("BadCid", ()), f"{name}: {bad!r}"
        http = functions.registerOffchainTrack(
            random_id(), AUDIO_HASH, bad, MANIFEST_HASH, MANIFEST_CID
        )
        assert await revert_of(http, publisher) == ("BadCid", ()), f"{name}: {bad!r}"
    assert await chain.status(request_id) == Status.PENDING

    # A raw-leaf CID (a file of one chunk) is as good as a dag-pb one, and reads back the same.
    await chain.send(
        functions.registerTrack(request_id, AUDIO_HASH, RAW_CID, MANIFEST_HASH, MANIFEST_CID),
        publisher,
    )
    assert await functions.trackOf(request_id).call() == [AUDIO_HASH, RAW_CID]
    assert await functions.requests(request_id).call() == [
        chain.requester.address,
        Status.REGISTERED,
        RAW,
        0,
        chain.requested_at[request_id],
        0,
    ]


async def test_on_chain_request_is_registered_once(chain: Chain) -> None:
    request_id = await chain.request()
    receipt = await chain.register(request_id)

    (event,) = chain.reg.events.TrackRegistered().process_receipt(receipt, errors=DISCARD)
    assert event["address"] == chain.reg.address
    assert event["args"]["requestId"] == request_id
    assert event["args"]["audioHash"] == AUDIO_HASH
    assert event["args"]["cid"] == CID
    assert await chain.status(request_id) == Status.REGISTERED
    assert (await chain.reg.functions.requests(request_id).call())[2] == DAG_PB

    # A valid second registration, with other hashes and CIDs: refused, nothing overwritten.
    again = chain.reg.functions.registerTrack(
        request_id,
        OTHER_HASH,
        OTHER_CID,
        OTHER_MANIFEST_HASH,
        keccak_block_cid(OTHER_MANIFEST_HASH),
    )
    assert await revert_of(again, chain.publisher) == ("AlreadyRegistered", (request_id,))
    raw = chain.reg.functions.registerTrack(
        request_id, OTHER_HASH, RAW_CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(raw, chain.publisher) == ("AlreadyRegistered", (request_id,))
    assert await chain.reg.functions.trackOf(request_id).call() == [AUDIO_HASH, CID]
    assert await chain.reg.functions.provenanceOf(request_id).call() == [
        MANIFEST_HASH,
        MANIFEST_CID,
    ]


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
    # It never was an on-chain request: its record (made to hold the CID's codec) has no
    # requester, no fee and no block.
    assert await chain.reg.functions.requests(http_id).call() == [
        ZERO_ADDRESS,
        Status.REGISTERED,
        DAG_PB,
        0,
        0,
        0,
    ]

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


async def test_request_of_audio_finds_the_first_registration_of_a_files_bytes(
    chain: Chain,
) -> None:
    first, second, other = await chain.request(), await chain.request(), await chain.request()
    request_of = chain.reg.functions.requestOfAudio
    assert await request_of(AUDIO_HASH).call() == ZERO_HASH  # nothing registered yet
    await chain.register(first)
    await chain.register(second)  # the same bytes again (same request and seed, say)
    await chain.register(other, OTHER_HASH)
    assert await request_of(AUDIO_HASH).call() == first
    assert await request_of(OTHER_HASH).call() == other
    assert await request_of(random_id()).call() == ZERO_HASH
    # An off-chain registration is found the same way, under its derived id.
    http_hash = b"\x42" * 32
    offchain_id = random_id()
    await chain.send(
        chain.reg.functions.registerOffchainTrack(
            offchain_id, http_hash, CID, MANIFEST_HASH, MANIFEST_CID
        ),
        chain.publisher,
    )
    derived = await chain.reg.functions.offchainRequestId(offchain_id).call()
    assert await request_of(http_hash).call() == derived
    # The typed wrapper says None for bytes nobody registered.
    registry = Registry(chain.w3, chain.reg.address)
    assert await registry.request_of_audio(AUDIO_HASH) == to_hex(first)
    assert await registry.request_of_audio(random_id()) is None


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


@pytest.mark.parametrize("char", ["é", "€", "🎵"])
@pytest.mark.parametrize("lead", [0, 1, 2, 3])
async def test_the_contract_never_cuts_a_reason_inside_a_utf8_character(
    chain: Chain, char: str, lead: int
) -> None:
    # The publisher cuts reasons itself (publisher.reasons); the contract's cut is the last
    # guard, for any other publisher: it backs off to the start of the character it would cut.
    reason = "r" * lead + char * 200
    receipt = await chain.fail(await chain.request(), reason)
    (log,) = [
        entry
        for entry in receipt["logs"]
        if entry["topics"][0].to_0x_hex() == registry.event_topic("GenerationFailed")
    ]
    raw = registry.decode_event(
        "GenerationFailed", [t.to_0x_hex() for t in log["topics"]], bytes(log["data"])
    )["reason"]
    width = len(char.encode())
    assert 256 - width < len(raw) <= 256
    assert raw.decode("utf-8") == reason[: lead + (len(raw) - lead) // width]


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
    function cancelRequest(bytes32 requestId) external;
    function reclaim(bytes32 requestId) external;
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

    function cancel(bytes32 requestId) external { registry.cancelRequest(requestId); }

    function reclaim(bytes32 requestId) external { registry.reclaim(requestId); }

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


UINT80_MAX = 2**80 - 1  # about 1.2 million ether


async def test_fees_up_to_uint80_max_are_stored_and_refunded_in_full(w3: AsyncWeb3) -> None:
    chain = await Chain.deploy(w3, UINT80_MAX)  # the largest fee the constructor takes
    assert await chain.reg.functions.requestFee().call() == UINT80_MAX
    rich: LocalAccount = Account.create()
    await w3.provider.make_request("anvil_setBalance", [rich.address, hex(3 * UINT80_MAX)])

    failed, registered = await chain.request(sender=rich), await chain.request(sender=rich)
    assert await chain.reg.functions.requests(failed).call() == [
        rich.address,
        Status.PENDING,
        0,
        UINT80_MAX,
        chain.requested_at[failed],
        0,
    ]
    receipt = await chain.fail(failed)
    (event,) = chain.reg.events.GenerationFailed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["refund"] == UINT80_MAX
    assert await chain.balance_change(rich.address, receipt) == UINT80_MAX
    await chain.register(registered)
    assert await chain.reg.functions.collectedFees().call() == UINT80_MAX
    assert await w3.eth.get_balance(chain.reg.address) == UINT80_MAX


async def test_a_fee_above_uint80_max_is_refused(chain: Chain) -> None:
    functions = chain.reg.functions
    for fee in (UINT80_MAX + 1, 2**96 + 1, 2**256 - 1):
        call = functions.setRequestFee(fee)
        assert await revert_of(call, chain.owner) == ("FeeTooLarge", (fee,))
        # The constructor too: simulate the deployment.
        factory = chain.w3.eth.contract(abi=registry.abi(), bytecode=registry.bytecode())
        tx = await factory.constructor(chain.publisher.address, fee, 1).build_transaction(
            {"from": chain.owner.address, "gas": 5_000_000}
        )
        with pytest.raises(ContractCustomError) as info:
            await chain.w3.eth.call({"from": chain.owner.address, "data": tx["data"]})
        assert decode_error(str(info.value.data)) == ("FeeTooLarge", (fee,))
    assert await functions.requestFee().call() == 0

    receipt = await chain.send(functions.setRequestFee(UINT80_MAX), chain.owner)
    (event,) = chain.reg.events.RequestFeeSet().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["fee"] == UINT80_MAX
    assert await functions.requestFee().call() == UINT80_MAX


# ---------------------------------------------------------------------- cancel and reclaim


def test_request_status_follows_the_contract_enum() -> None:
    source = (contracts.CONTRACTS_DIR / f"{registry.NAME}.sol").read_text()
    body = re.search(r"enum Status \{(.*?)\}", source, re.DOTALL)
    assert body is not None
    members = re.findall(r"^\s*(\w+)", re.sub(r"//[^\n]*", "", body.group(1)), re.MULTILINE)
    assert (
        [m.upper() for m in members] == [s.name for s in RequestStatus] == list(Status.__members__)
    )
    assert [s.value for s in RequestStatus] == list(range(len(members)))


def _canceled(chain: Chain, receipt: TxReceipt) -> dict[str, Any]:
    """The one RequestCanceled of ``receipt``, decoded with `registry.decode_event`."""
    topic = registry.event_topic("RequestCanceled")
    assert topic == to_hex(keccak(b"RequestCanceled(bytes32,address,uint256,bool)"))
    (log,) = [
        log
        for log in receipt["logs"]
        if log["address"] == chain.reg.address and to_hex(log["topics"][0]) == topic
    ]
    topics = [to_hex(t) for t in log["topics"]]
    return registry.decode_event("RequestCanceled", topics, bytes(log["data"]))


async def test_requester_cancels_a_pending_request_and_gets_the_fee_back_once(
    paid: Chain,
) -> None:
    request_id = await paid.request()
    receipt = await paid.send(paid.api.cancel_request(request_id), paid.requester)

    assert _canceled(paid, receipt) == {
        "requestId": to_hex(request_id),
        "requester": paid.requester.address,
        "refund": FEE,
        "reclaimed": False,
    }
    assert paid.reg.events.RefundDeferred().process_receipt(receipt, errors=DISCARD) == ()
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await paid.balance_change(paid.requester.address, receipt) == FEE - gas_cost
    assert await paid.balance_change(paid.reg.address, receipt) == -FEE
    assert await paid.w3.eth.get_balance(paid.reg.address) == 0
    assert await paid.status(request_id) == Status.CANCELED
    assert await paid.api.status(request_id) is RequestStatus.CANCELED
    assert await paid.api.reclaimable_at(request_id) == 0

    # Once: canceled is final, for the requester and for the publisher alike.
    for call in (paid.api.cancel_request(request_id), paid.api.reclaim(request_id)):
        assert await revert_of(call, paid.requester) == ("NotPending", (request_id,))
    fail = paid.api.mark_failed(request_id, "too late")
    assert await revert_of(fail, paid.publisher) == ("NotPending", (request_id,))
    register = paid.reg.functions.registerTrack(
        request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(register, paid.publisher) == ("NotPending", (request_id,))
    pending = await paid.request()
    batch = [_item(0, request_id), _item(1, pending)]
    receipt = await paid.send(paid.api.register_tracks(batch), paid.publisher)
    assert paid.api.skipped(receipt) == {to_hex(request_id): "NotPending"}
    assert await paid.api.track_of(request_id) is None
    assert await paid.status(pending) == Status.REGISTERED
    assert await paid.reg.functions.collectedFees().call() == FEE  # the registered one's only
    assert await paid.w3.eth.get_balance(paid.reg.address) == FEE


async def test_only_the_requester_may_cancel_or_reclaim(paid: Chain) -> None:
    request_id = await paid.request()
    offchain_id = random_id()
    await paid.send(
        paid.reg.functions.registerOffchainTrack(
            offchain_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
        ),
        paid.publisher,
    )
    http_id = await paid.reg.functions.offchainRequestId(offchain_id).call()
    for call in (paid.api.cancel_request(request_id), paid.api.reclaim(request_id)):
        for account in (paid.stranger, paid.publisher, paid.owner):
            assert await revert_of(call, account) == ("NotRequester", (request_id,))
    # Ids without a requester: never requested, or an HTTP request's registration.
    for rid in (random_id(), http_id):
        for call in (paid.api.cancel_request(rid), paid.api.reclaim(rid)):
            assert await revert_of(call, paid.requester) == ("NotRequester", (rid,))
    assert await paid.status(request_id) == Status.PENDING
    assert await paid.w3.eth.get_balance(paid.reg.address) == FEE


async def test_a_registered_or_failed_request_cannot_be_canceled(paid: Chain) -> None:
    registered, failed, paused = await paid.request(), await paid.request(), await paid.request()
    await paid.register(registered)
    await paid.fail(failed)
    for request_id in (registered, failed):
        for call in (paid.api.cancel_request(request_id), paid.api.reclaim(request_id)):
            assert await revert_of(call, paid.requester) == ("NotPending", (request_id,))
        assert await paid.api.reclaimable_at(request_id) == 0
    assert await paid.status(registered) == Status.REGISTERED
    assert await paid.status(failed) == Status.FAILED

    # Pausing stops new requests, not the way back out of one.
    await paid.send(paid.reg.functions.setPaused(True), paid.owner)
    receipt = await paid.send(paid.api.cancel_request(paused), paid.requester)
    assert _canceled(paid, receipt)["refund"] == FEE
    assert await paid.status(paused) == Status.CANCELED


async def test_reclaim_before_the_delay_is_too_early(paid: Chain) -> None:
    assert await paid.reg.functions.reclaimAfterBlocks().call() == DEFAULT_RECLAIM_AFTER_BLOCKS
    request_id = await paid.request()
    available = paid.requested_at[request_id] + DEFAULT_RECLAIM_AFTER_BLOCKS
    assert await paid.reg.functions.reclaimableAt(request_id).call() == available
    assert await paid.api.reclaimable_at(request_id) == available
    assert await revert_of(paid.api.reclaim(request_id), paid.requester) == (
        "TooEarly",
        (available,),
    )
    # The requester's own call first: a stranger learns nothing about the timing.
    assert await revert_of(paid.api.reclaim(request_id), paid.stranger) == (
        "NotRequester",
        (request_id,),
    )
    assert await paid.status(request_id) == Status.PENDING


@pytest.fixture
async def private_w3(anvil: Anvil) -> AsyncIterator[AsyncWeb3]:
    """A client of a private anvil that mines only when told: exact block numbers."""
    web3 = connect(anvil.url)
    yield web3
    await web3.provider.disconnect()


async def _mined(chain: Chain, call: Any, sender: LocalAccount) -> TxReceipt:
    """Send ``call`` without estimating its gas (anvil estimates in the head block, not in
    the next one, where the transaction is mined); its receipt, success or not."""
    tx = await call.build_transaction(
        {
            "from": sender.address,
            "gas": 200_000,
            "nonce": await chain.w3.eth.get_transaction_count(sender.address, "pending"),
        }
    )
    tx_hash = await chain.w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    return await chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


async def test_reclaim_refunds_the_fee_once_from_exactly_the_announced_block(
    private_w3: AsyncWeb3,
) -> None:
    delay = 5
    paid = await Chain.deploy(private_w3, FEE, delay)
    assert await paid.reg.functions.reclaimAfterBlocks().call() == delay
    request_id = await paid.request()
    available = paid.requested_at[request_id] + delay
    assert await paid.api.reclaimable_at(request_id) == available

    # Mined in the block before: reverted (TooEarly), nothing changed.
    head = await private_w3.eth.block_number
    await private_w3.provider.make_request("anvil_mine", [hex(available - 2 - head)])
    reclaim = paid.api.reclaim(request_id)
    assert await revert_of(reclaim, paid.requester) == ("TooEarly", (available,))
    receipt = await _mined(paid, paid.api.reclaim(request_id), paid.requester)
    assert (receipt["status"], receipt["blockNumber"]) == (0, available - 1)
    assert await paid.status(request_id) == Status.PENDING
    assert await private_w3.eth.get_balance(paid.reg.address) == FEE

    # Mined in the announced block: refunded.
    receipt = await _mined(paid, paid.api.reclaim(request_id), paid.requester)
    assert (receipt["status"], receipt["blockNumber"]) == (1, available)
    assert _canceled(paid, receipt) == {
        "requestId": to_hex(request_id),
        "requester": paid.requester.address,
        "refund": FEE,
        "reclaimed": True,
    }
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await paid.balance_change(paid.requester.address, receipt) == FEE - gas_cost
    assert await private_w3.eth.get_balance(paid.reg.address) == 0
    assert await paid.status(request_id) == Status.CANCELED
    assert await paid.api.reclaimable_at(request_id) == 0
    for call in (paid.api.reclaim(request_id), paid.api.cancel_request(request_id)):
        assert await revert_of(call, paid.requester) == ("NotPending", (request_id,))
    register = paid.reg.functions.registerTrack(
        request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
    )
    assert await revert_of(register, paid.publisher) == ("NotPending", (request_id,))


@pytest.mark.parametrize("how", ["cancel", "reclaim"])
async def test_a_canceled_refund_to_a_rejecting_contract_is_deferred_then_claimed(
    w3: AsyncWeb3, how: str
) -> None:
    paid = await Chain.deploy(w3, FEE, 2)
    artifact = rejecting_requester()
    factory = w3.eth.contract(
        abi=artifact["abi"], bytecode="0x" + artifact["evm"]["bytecode"]["object"]
    )
    deployed = await paid.send(factory.constructor(paid.reg.address), paid.stranger)
    requester = w3.eth.contract(address=deployed["contractAddress"], abi=artifact["abi"])
    receipt = await paid.send(requester.functions.request("a song"), paid.stranger, FEE)
    (event,) = paid.reg.events.GenerationRequested().process_receipt(receipt, errors=DISCARD)
    request_id = event["args"]["requestId"]
    # Only the requesting contract may take it back, not the account behind it.
    assert await revert_of(paid.api.cancel_request(request_id), paid.stranger) == (
        "NotRequester",
        (request_id,),
    )
    if how == "reclaim":
        await w3.provider.make_request("anvil_mine", [hex(2)])
    receipt = await paid.send(requester.functions[how](request_id), paid.stranger)

    assert _canceled(paid, receipt) == {
        "requestId": to_hex(request_id),
        "requester": requester.address,
        "refund": FEE,
        "reclaimed": how == "reclaim",
    }
    (deferred,) = paid.reg.events.RefundDeferred().process_receipt(receipt, errors=DISCARD)
    assert (deferred["args"]["requester"], deferred["args"]["amount"]) == (requester.address, FEE)
    assert await paid.reg.functions.deferredRefunds(requester.address).call() == FEE
    assert await w3.eth.get_balance(requester.address) == 0
    assert await w3.eth.get_balance(paid.reg.address) == FEE
    assert await paid.status(request_id) == Status.CANCELED

    assert await revert_of(requester.functions.claim(), paid.stranger) == ("TransferFailed", ())
    await paid.send(requester.functions.setAccepting(True), paid.stranger)
    receipt = await paid.send(requester.functions.claim(), paid.stranger)
    assert await paid.balance_change(requester.address, receipt) == FEE
    assert await paid.reg.functions.deferredRefunds(requester.address).call() == 0
    assert await w3.eth.get_balance(paid.reg.address) == 0
    receipt = await paid.send(requester.functions.claim(), paid.stranger)
    assert await paid.balance_change(requester.address, receipt) == 0


async def test_a_free_request_is_canceled_without_refund(chain: Chain) -> None:
    request_id = await chain.request()
    receipt = await chain.send(chain.api.cancel_request(request_id), chain.requester)
    assert _canceled(chain, receipt)["refund"] == 0
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await chain.balance_change(chain.requester.address, receipt) == -gas_cost
    assert await chain.status(request_id) == Status.CANCELED


async def test_the_reclaim_delay_is_1_to_uint64_max_blocks(w3: AsyncWeb3) -> None:
    owner = Account.from_key(dev_key(5))
    factory = w3.eth.contract(abi=registry.abi(), bytecode=registry.bytecode())

    async def simulate(delay: int) -> None:
        """eth_call of the deployment with ``delay``."""
        tx = await factory.constructor(owner.address, 0, delay).build_transaction(
            {"from": owner.address, "gas": 5_000_000}
        )
        await w3.eth.call({"from": owner.address, "data": tx["data"]})

    for refused in (0, 2**64, 2**256 - 1):
        with pytest.raises(ContractCustomError) as info:
            await simulate(refused)
        assert decode_error(str(info.value.data)) == ("BadReclaimDelay", ())
    for accepted in (1, 2**64 - 1):
        await simulate(accepted)
    with pytest.raises(ContractCustomError) as info:
        await deploy_registry(w3, dev_key(5), owner.address, 0, 0)
    assert decode_error(str(info.value.data)) == ("BadReclaimDelay", ())


# ---------------------------------------------------------------------- gas


async def test_gas_used_by_the_main_calls(paid: Chain) -> None:
    functions = paid.reg.functions
    short = await paid.send(
        functions.requestGeneration("a calm piano piece", "", 30), paid.requester, FEE
    )
    long = await paid.send(
        functions.requestGeneration("p" * 1000, "l" * 1000, 240), paid.requester, FEE
    )
    _, with_options = await paid.request_with_options(OPTIONS, "a calm piano piece")
    _, no_options = await paid.request_with_options(NO_OPTIONS, "a calm piano piece")
    _, three = await paid.request_with_options(with_variations(OPTIONS, 3), "a calm piano piece")
    # The same as `short`, but the requester's count is no longer 0 (a cheaper store), as for
    # the options requests: what they are compared with.
    again = await paid.send(
        functions.requestGeneration("a calm piano piece", "", 30), paid.requester, FEE
    )
    (event,) = paid.reg.events.GenerationRequested().process_receipt(short, errors=DISCARD)
    register = await paid.register(event["args"]["requestId"])
    gas = {
        "requestGeneration(short prompt)": short["gasUsed"],
        "requestGeneration(1000 B prompt + 1000 B lyrics)": long["gasUsed"],
        "requestGeneration(short prompt, not the first)": again["gasUsed"],
        "requestGenerationWithOptions(short prompt, OPTIONS)": with_options["gasUsed"],
        "requestGenerationWithOptions(short prompt, NO_OPTIONS)": no_options["gasUsed"],
        "requestGenerationWithOptions(short prompt, OPTIONS, 3 variations)": three["gasUsed"],
        "registerTrack(dag-pb CID, MANIFEST_HASH, its keccak CID)": register["gasUsed"],
    }
    print("\ngas used:", gas)
    print(
        "options cost, over requestGeneration (not the first):",
        with_options["gasUsed"] - again["gasUsed"],
        "(OPTIONS),",
        no_options["gasUsed"] - again["gasUsed"],
        "(NO_OPTIONS)",
    )
    print(
        "each variation costs, over the request (OPTIONS):",
        (three["gasUsed"] - with_options["gasUsed"]) // 2,
    )
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
    other = chain.reg.functions.registerTrack(
        request_id, AUDIO_HASH, CID, OTHER_MANIFEST_HASH, keccak_block_cid(OTHER_MANIFEST_HASH)
    )
    assert await revert_of(other, chain.publisher) == ("AlreadyRegistered", (request_id,))
    assert (await chain.reg.functions.provenanceOf(request_id).call())[0] == MANIFEST_HASH


async def test_only_a_publisher_records_provenance_and_it_must_be_real(chain: Chain) -> None:
    request_id = await chain.request()
    functions = chain.reg.functions
    for account in (chain.stranger, chain.owner, chain.requester):
        call = functions.registerTrack(request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
        assert await revert_of(call, account) == ("NotPublisher", ())
    # A zero manifest hash, with the CID that spells it: ZeroHash; with any other CID: BadCid.
    zero_cid = keccak_block_cid(ZERO_HASH)
    no_hash = functions.registerTrack(request_id, AUDIO_HASH, CID, ZERO_HASH, zero_cid)
    assert await revert_of(no_hash, chain.publisher) == ("ZeroHash", ())
    http = functions.registerOffchainTrack(random_id(), AUDIO_HASH, CID, ZERO_HASH, zero_cid)
    assert await revert_of(http, chain.publisher) == ("ZeroHash", ())
    mismatch = functions.registerTrack(request_id, AUDIO_HASH, CID, ZERO_HASH, MANIFEST_CID)
    assert await revert_of(mismatch, chain.publisher) == ("BadCid", ())

    # The manifest CID is not free: it must be exactly CIDv1 raw keccak-256 of manifestHash.
    bad_manifest_cids = {
        "empty": "",
        "129 characters": "b" * 129,
        "upper case": MANIFEST_CID.upper(),
        "58 characters": MANIFEST_CID[:-1],
        "a trailing space": MANIFEST_CID + " ",
        "padding bits set": MANIFEST_CID[:-1] + BASE32[BASE32.index(MANIFEST_CID[-1]) | 1],
        "another manifest's": keccak_block_cid(OTHER_MANIFEST_HASH),
        "sha2-256 instead of keccak-256": cid_of(RAW, MANIFEST_HASH),
        "dag-pb instead of raw": cid_of(DAG_PB, MANIFEST_HASH, KECCAK_256),
        "the track's file CID": CID,
    }
    for name, bad in bad_manifest_cids.items():
        call = functions.registerTrack(request_id, AUDIO_HASH, CID, MANIFEST_HASH, bad)
        assert await revert_of(call, chain.publisher) == ("BadCid", ()), name
        http = functions.registerOffchainTrack(random_id(), AUDIO_HASH, CID, MANIFEST_HASH, bad)
        assert await revert_of(http, chain.publisher) == ("BadCid", ()), name
    assert MANIFEST_CID == Provenance.of(MANIFEST_HASH).manifest_cid
    assert MANIFEST_CID == cid_of(RAW, MANIFEST_HASH, KECCAK_256)
    ok = functions.registerTrack(request_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID)
    await ok.call({"from": chain.publisher.address})  # the real one passes
    assert await chain.status(request_id) == Status.PENDING


# ---------------------------------------------------------------------- CIDs, stored compactly

# The contract keeps a file CID as its 32-byte digest and its codec, and a manifest CID not at
# all (it is manifestHash, spelled out): every string it returns or emits is re-encoded, so
# each must come back exactly as registered.

_DIGESTS = st.binary(min_size=32, max_size=32)
_NONZERO = _DIGESTS.filter(any)


async def _register_with(
    chain: Chain, how: str, track: Track, provenance: Provenance
) -> tuple[bytes, TxReceipt]:
    """Register through ``registerTrack`` (a new chain request), ``registerOffchainTrack`` or
    a one-item ``registerTracks``; the request id and the receipt."""
    functions, api = chain.reg.functions, chain.api
    if how == "registerOffchainTrack":
        offchain_id = random_id()
        request_id = await functions.offchainRequestId(offchain_id).call()
        call = api.register_offchain_track(offchain_id, track, provenance)
    elif how == "registerTrack":
        request_id = await chain.request()
        call = api.register_track(request_id, track, provenance)
    else:
        request_id = await chain.request()
        call = api.register_tracks([TrackItem(to_hex(request_id), track, provenance)])
    return bytes(request_id), await chain.send(call, chain.publisher)


async def _check_registered(
    chain: Chain, request_id: bytes, receipt: TxReceipt, track: Track, provenance: Provenance
) -> None:
    (registered,) = chain.reg.events.TrackRegistered().process_receipt(receipt, errors=DISCARD)
    assert registered["args"]["requestId"] == request_id
    assert to_hex(registered["args"]["audioHash"]) == track.audio_hash
    assert registered["args"]["cid"] == track.cid
    (made,) = chain.reg.events.TrackProvenance().process_receipt(receipt, errors=DISCARD)
    assert made["args"]["requestId"] == request_id
    assert to_hex(made["args"]["manifestHash"]) == provenance.manifest_hash
    assert made["args"]["manifestCid"] == provenance.manifest_cid
    assert await chain.api.track_of(request_id) == track
    assert await chain.api.provenance_of(request_id) == provenance
    assert chain.api.skipped(receipt) == {}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one registry for all
)
@given(
    codec=st.sampled_from([RAW, DAG_PB]),
    digest=_DIGESTS,
    manifest_hash=_NONZERO,
    how=st.sampled_from(["registerTrack", "registerOffchainTrack", "registerTracks"]),
)
@example(codec=RAW, digest=ZERO_HASH, manifest_hash=b"\xff" * 32, how="registerTrack")
@example(codec=DAG_PB, digest=b"\xff" * 32, manifest_hash=b"\x01" * 32, how="registerTracks")
@example(
    codec=DAG_PB,
    digest=b"\x80" + b"\x00" * 31,
    manifest_hash=b"\x00" * 31 + b"\x01",
    how="registerOffchainTrack",
)
async def test_a_cid_reads_back_exactly_as_registered(
    chain: Chain, codec: int, digest: bytes, manifest_hash: bytes, how: str
) -> None:
    cid = cid_to_str(b"\x01" + bytes([codec, 0x12, 0x20]) + digest)
    track = Track(to_hex(keccak(digest + b"audio")), cid)
    provenance = Provenance(to_hex(manifest_hash), keccak_block_cid(manifest_hash))
    request_id, receipt = await _register_with(chain, how, track, provenance)
    await _check_registered(chain, request_id, receipt, track, provenance)
    assert (await chain.reg.functions.requests(request_id).call())[2] == codec


@pytest.mark.parametrize("how", ["registerTrack", "registerOffchainTrack", "registerTracks"])
async def test_real_cids_of_a_small_and_a_large_file_read_back(chain: Chain, how: str) -> None:
    small = os.urandom(1000)
    large = os.urandom(300 * 1024)  # two chunks: a dag-pb root over raw leaves
    for data, prefix in ((small, "bafkrei"), (large, "bafybei")):
        cid = cid_of_bytes(data)
        assert cid.startswith(prefix)
        track = Track(to_hex(keccak(data)), cid)
        provenance = Provenance.of(keccak(b"manifest of " + data))
        request_id, receipt = await _register_with(chain, how, track, provenance)
        await _check_registered(chain, request_id, receipt, track, provenance)
        assert await chain.reg.functions.verify(request_id, keccak(data)).call() is True


# ---------------------------------------------------------------------- registerTracks


def _item(n: int, request_id: bytes | str, offchain_id: bytes | None = None) -> TrackItem:
    """The ``n``-th item of a batch: its own hashes, and a raw or a dag-pb CID."""
    track = Track(
        to_hex(keccak(b"audio %d" % n)), cid_of(RAW if n % 2 else DAG_PB, keccak(b"file %d" % n))
    )
    return TrackItem(
        to_hex(request_id),
        track,
        Provenance.of(keccak(b"manifest %d" % n)),
        None if offchain_id is None else to_hex(offchain_id),
    )


async def _offchain_item(chain: Chain, n: int, offchain_id: bytes | None = None) -> TrackItem:
    offchain_id = offchain_id or random_id()
    request_id = await chain.reg.functions.offchainRequestId(offchain_id).call()
    return _item(n, request_id, offchain_id)


def _logs(chain: Chain, receipt: TxReceipt) -> list[tuple[str, bytes, bytes]]:
    """(event name, indexed request id, data) of the registry's logs, in order."""
    names = {
        bytes.fromhex(registry.event_topic(name)[2:]): name
        for name in ("TrackRegistered", "TrackProvenance", "TrackSkipped")
    }
    return [
        (names[bytes(log["topics"][0])], bytes(log["topics"][1]), bytes(log["data"]))
        for log in receipt["logs"]
        if log["address"] == chain.reg.address
    ]


async def test_register_tracks_registers_a_mixed_batch_like_register_track(chain: Chain) -> None:
    chain_ids = [await chain.request(f"song {n}") for n in range(3)]
    items = [_item(n, rid) for n, rid in enumerate(chain_ids)]
    items += [await _offchain_item(chain, n) for n in (3, 4)]
    items.insert(1, items.pop())  # interleaved: chain, off-chain, chain, chain, off-chain
    call = chain.api.register_tracks(items)
    assert await call.call({"from": chain.publisher.address}) == 5
    receipt = await chain.send(call, chain.publisher)

    # Per item, in order: TrackRegistered then TrackProvenance, and nothing else.
    logs = _logs(chain, receipt)
    assert len(receipt["logs"]) == len(logs) == 10
    assert [(name, "0x" + rid.hex()) for name, rid, _ in logs] == [
        (name, item.request_id) for item in items for name in ("TrackRegistered", "TrackProvenance")
    ]
    # The very same events as registerTrack / registerOffchainTrack of the same files emit.
    for n, item in enumerate(items):
        if item.offchain_id is None:
            single = chain.api.register_track(await chain.request(), item.track, item.provenance)
        else:
            single = chain.api.register_offchain_track(random_id(), item.track, item.provenance)
        alone = _logs(chain, await chain.send(single, chain.publisher))
        assert [(name, data) for name, _, data in alone] == [
            (name, data) for name, _, data in logs[2 * n : 2 * n + 2]
        ]

    for item in items:
        assert await chain.api.track_of(item.request_id) == item.track
        assert await chain.api.provenance_of(item.request_id) == item.provenance
        assert await chain.api.verify(item.request_id, item.track.audio_hash) is True
        codec = RAW if item.track.cid.startswith("bafkrei") else DAG_PB
        requester = ZERO_ADDRESS if item.offchain_id else chain.requester.address
        block = chain.requested_at.get(bytes.fromhex(item.request_id[2:]), 0)
        assert await chain.reg.functions.requests(item.request_id).call() == [
            requester,
            Status.REGISTERED,
            codec,
            0,
            block,
            0,
        ]
        assert (block == 0) == (item.offchain_id is not None)


async def test_register_tracks_skips_bad_items_and_registers_the_rest(paid: Chain) -> None:
    good, dup = await paid.request(), await paid.request()
    registered, failed = await paid.request(), await paid.request()
    zero_audio, zero_manifest, bad_cid = [await paid.request() for _ in range(3)]
    never = random_id()
    await paid.register(registered)
    await paid.fail(failed)
    off_registered_id = random_id()
    await paid.send(
        paid.reg.functions.registerOffchainTrack(
            off_registered_id, AUDIO_HASH, CID, MANIFEST_HASH, MANIFEST_CID
        ),
        paid.publisher,
    )
    assert await paid.reg.functions.collectedFees().call() == FEE
    off_good = await _offchain_item(paid, 20)

    def spoiled(item: TrackItem, **changes: Any) -> TrackItem:
        track = Track(
            changes.get("audio_hash", item.track.audio_hash), changes.get("cid", item.track.cid)
        )
        return TrackItem(
            item.request_id, track, changes.get("provenance", item.provenance), item.offchain_id
        )

    batch: list[tuple[TrackItem, str | None]] = [
        (_item(0, good), None),
        (_item(1, registered), "AlreadyRegistered"),
        (_item(2, never), "NotPending"),
        (_item(3, failed), "NotPending"),
        (spoiled(_item(4, zero_audio), audio_hash=to_hex(ZERO_HASH)), "ZeroHash"),
        (spoiled(_item(5, zero_manifest), provenance=Provenance.of(ZERO_HASH)), "ZeroHash"),
        (spoiled(_item(6, bad_cid), cid=_item(6, bad_cid).track.cid.upper()), "BadCid"),
        (_item(7, dup), None),
        (_item(8, dup), "AlreadyRegistered"),  # the same id again, in the same batch
        (off_good, None),
        (
            _item(21, off_good.request_id, bytes.fromhex(off_good.offchain_id[2:])),
            "AlreadyRegistered",
        ),
        (await _offchain_item(paid, 22, off_registered_id), "AlreadyRegistered"),
        (spoiled(await _offchain_item(paid, 23), cid=MANIFEST_CID), "BadCid"),
        (spoiled(await _offchain_item(paid, 24), cid="b" * 59), "BadCid"),
    ]
    items = [item for item, _ in batch]
    call = paid.api.register_tracks(items)
    assert await call.call({"from": paid.publisher.address}) == 3
    receipt = await paid.send(call, paid.publisher)

    # One event per bad item, in order, naming the error registerTrack would have raised.
    skipped = [(rid, data) for name, rid, data in _logs(paid, receipt) if name == "TrackSkipped"]
    assert [("0x" + rid.hex(), data[:4]) for rid, data in skipped] == [
        (item.request_id, error_selector(error)) for item, error in batch if error
    ]
    assert all(data[4:] == b"\x00" * 28 for _, data in skipped)  # bytes4, left-aligned
    assert paid.api.skipped(receipt) == {item.request_id: error for item, error in batch if error}
    registered_logs = [rid for name, rid, _ in _logs(paid, receipt) if name == "TrackRegistered"]
    assert ["0x" + rid.hex() for rid in registered_logs] == [
        batch[0][0].request_id,
        batch[7][0].request_id,
        off_good.request_id,
    ]

    # Only the good ones changed anything; their fees (two chain requests) are collected.
    assert await paid.reg.functions.collectedFees().call() == 3 * FEE
    assert await paid.balance_change(paid.reg.address, receipt) == 0
    assert await paid.api.track_of(good) == batch[0][0].track
    assert await paid.api.track_of(dup) == batch[7][0].track  # not the second item's
    assert await paid.api.track_of(off_good.request_id) == off_good.track
    assert await paid.reg.functions.trackOf(registered).call() == [AUDIO_HASH, CID]
    assert await paid.reg.functions.trackOf(off_registered_id).call() == [ZERO_HASH, ""]
    for request_id in (zero_audio, zero_manifest, bad_cid):
        assert await paid.status(request_id) == Status.PENDING
        assert await paid.api.track_of(request_id) is None
    assert await paid.status(failed) == Status.FAILED
    assert await paid.status(never) == Status.NONE
    for item, _ in batch[12:]:
        assert await paid.api.track_of(item.request_id) is None


async def test_register_tracks_refuses_a_whole_batch_only_for_its_size_or_sender(
    chain: Chain,
) -> None:
    assert await chain.reg.functions.MAX_BATCH().call() == 128
    items = [await _offchain_item(chain, n) for n in range(129)]
    empty = chain.api.register_tracks([])
    assert await revert_of(empty, chain.publisher) == ("BadBatch", (0,))
    over = chain.api.register_tracks(items)
    assert await revert_of(over, chain.publisher) == ("BadBatch", (129,))
    # 128 is allowed: one registers, the others are skipped, cheaply. (128 registrations of
    # HTTP requests take about 15.7M gas, under the 2^24 gas a transaction may use.)
    zero = to_hex(ZERO_HASH)
    full = items[:1] + [
        TrackItem(i.request_id, Track(zero, i.track.cid), i.provenance, i.offchain_id)
        for i in items[1:128]
    ]
    assert await chain.api.register_tracks(full).call({"from": chain.publisher.address}) == 1
    one = chain.api.register_tracks(items[:1])
    for account in (chain.stranger, chain.owner, chain.requester):
        assert await revert_of(one, account) == ("NotPublisher", ())
        assert await revert_of(empty, account) == ("NotPublisher", ())
    assert await chain.api.track_of(items[0].request_id) is None


async def test_register_tracks_gas_per_track(chain: Chain) -> None:
    """Measured, not pinned: gas of registerTracks per track for a few batch sizes."""
    single = await chain.register(await chain.request())
    per_track: dict[str, float] = {}
    n = 0
    for size in (1, 10, 20):
        chain_items = []
        for _ in range(size):
            chain_items.append(_item(n, await chain.request()))
            n += 1
        offchain_items = []
        for _ in range(size):
            offchain_items.append(await _offchain_item(chain, n))
            n += 1
        for kind, items in (("chain", chain_items), ("off-chain", offchain_items)):
            receipt = await chain.send(chain.api.register_tracks(items), chain.publisher)
            assert chain.api.skipped(receipt) == {}
            per_track[f"{size} {kind}"] = receipt["gasUsed"] / size
    print("\nregisterTrack:", single["gasUsed"], "registerTracks gas per track:", per_track)
    assert all(40_000 < gas < 400_000 for gas in per_track.values())
    for kind in ("chain", "off-chain"):
        assert per_track[f"20 {kind}"] < per_track[f"10 {kind}"] < per_track[f"1 {kind}"]
    assert per_track["20 chain"] < single["gasUsed"]  # batching pays for itself
