"""register / mark_failed against a fresh registry on a private anvil.

Roles, all anvil dev accounts: 0 deploys (owner), 1 publishes through a `TxSender`, 2 is a
second publisher instance, 3 requests (and pays the fee). A private node keeps nonces and
balances free of other tests' traffic, so "no transaction was sent" is checked exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract.async_contract import AsyncContractFunction
from web3.logs import DISCARD

from acesteps.chain import connect, deploy_registry
from acesteps.dev.devchain import dev_key
from acesteps.registry import Provenance, Registry, RequestStatus, Track, offchain_request_id
from acesteps.types import to_hex
from publisher.errors import ConflictingRegistration, ContractReverted, PermanentPublisherError
from publisher.registrar import Registration, mark_failed, register
from publisher.txsender import TxSender
from publisher.txtypes import SentTx, TxPolicy
from tests.integration.anvil import Anvil

FEE = 10**15
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
OTHER_CID = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
POLICY = TxPolicy(poll_interval_s=0.02, deadline_s=30)


@dataclass
class Chain:
    w3: AsyncWeb3[Any]
    reg: Registry
    sender: TxSender
    requester: LocalAccount
    from_block: int

    async def nonce(self) -> int:
        return await self.w3.eth.get_transaction_count(self.sender.address, "pending")  # type: ignore[arg-type]

    async def request(self) -> bytes:
        """requestGeneration from the requester, paying the fee; the new request id."""
        requester = TxSender(self.w3, dev_key(3), POLICY)
        sent = await requester.send(
            self.reg.contract.functions.requestGeneration("a calm piano piece", "", 30),
            confirmations=1,
            value=FEE,
        )
        receipt = await self.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]
        (event,) = self.reg.contract.events.GenerationRequested().process_receipt(
            receipt, errors=DISCARD
        )
        return bytes(event["args"]["requestId"])

    async def status(self, rid: bytes) -> RequestStatus:
        return await self.reg.status(rid)


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    node = Anvil(tmp_path).start()
    w3 = connect(node.url)
    try:
        publisher = Account.from_key(dev_key(1))
        deployment = await deploy_registry(w3, dev_key(0), publisher.address, FEE)
        yield Chain(
            w3,
            Registry(w3, deployment.address),
            TxSender(w3, dev_key(1), POLICY),
            Account.from_key(dev_key(3)),
            deployment.block_number,
        )
    finally:
        await w3.provider.disconnect()
        node.stop()


PROVENANCE = Provenance.of(keccak(b"a manifest"))


async def register_track(
    registry: Registry,
    sender: TxSender,
    rid: str | bytes,
    audio_hash: str | bytes,
    cid: str,
    confirmations: int,
    **options: Any,
) -> Registration:
    """`register` of (audio_hash, cid), with a made-up manifest."""
    track = Track(to_hex(audio_hash), cid)
    return await register(registry, sender, rid, track, PROVENANCE, confirmations, **options)


def new_id() -> bytes:
    return keccak(os.urandom(16))


async def test_register_then_again_is_already_registered_without_a_transaction(
    chain: Chain,
) -> None:
    rid, audio = await chain.request(), keccak(b"the track")
    first = await register_track(chain.reg, chain.sender, rid, audio, CID, 1)
    assert not first.already
    assert (first.request_id, first.track.audio_hash, first.track.cid) == (
        "0x" + rid.hex(),
        "0x" + audio.hex(),
        CID,
    )
    assert tuple(await chain.reg.contract.functions.trackOf(rid).call()) == (audio, CID)
    receipt = await chain.w3.eth.get_transaction_receipt(first.tx_hash)  # type: ignore[arg-type]
    assert receipt["blockNumber"] == first.block_number and receipt["status"] == 1

    nonce = await chain.nonce()
    # As after a crash between the mined transaction and the Kafka commit; hex inputs too.
    again = await register_track(
        chain.reg,
        chain.sender,
        "0x" + rid.hex(),
        "0x" + audio.hex(),
        CID,
        1,
        from_block=chain.from_block,
    )
    assert again.already
    assert (again.tx_hash, again.block_number) == (first.tx_hash, first.block_number)
    assert await chain.nonce() == nonce


@pytest.mark.parametrize("other", ["hash", "cid"])
async def test_a_conflicting_registration_is_permanent_and_loud(
    chain: Chain, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    rid, audio = await chain.request(), keccak(b"the track")
    await register_track(chain.reg, chain.sender, rid, audio, CID, 1)
    nonce = await chain.nonce()
    caplog.set_level(logging.ERROR, "publisher.registrar")
    attempt = (keccak(b"another track"), CID) if other == "hash" else (audio, OTHER_CID)

    with pytest.raises(ConflictingRegistration) as info:
        await register_track(chain.reg, chain.sender, rid, *attempt, 1)

    assert isinstance(info.value, PermanentPublisherError)
    assert info.value.code == "conflicting_registration"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "CONFLICTING" in caplog.text and rid.hex() in caplog.text
    assert await chain.nonce() == nonce


class RacingSender(TxSender):
    """Lets another publisher instance register first, between our read and our send."""

    def __init__(self, w3: AsyncWeb3[Any], rival: TxSender, rival_call: AsyncContractFunction):
        super().__init__(w3, dev_key(1), POLICY)
        self.rival, self.rival_call = rival, rival_call
        self.sends = 0

    async def send(
        self, fn: AsyncContractFunction, *, confirmations: int, value: int = 0
    ) -> SentTx:
        self.sends += 1
        self.rival_sent = await self.rival.send(self.rival_call, confirmations=1)
        return await super().send(fn, confirmations=confirmations, value=value)


@pytest.mark.parametrize("rival_cid", [CID, OTHER_CID], ids=["same track", "other track"])
async def test_losing_a_race_reads_the_winner_back(chain: Chain, rival_cid: str) -> None:
    rival = TxSender(chain.w3, dev_key(2), POLICY)
    owner = TxSender(chain.w3, dev_key(0), POLICY)
    await owner.send(
        chain.reg.contract.functions.setPublisher(rival.address, True), confirmations=1
    )
    rid, audio = await chain.request(), keccak(b"the track")
    racing = RacingSender(
        chain.w3,
        rival,
        chain.reg.contract.functions.registerTrack(
            rid,
            audio,
            rival_cid,
            bytes.fromhex(PROVENANCE.manifest_hash[2:]),
            PROVENANCE.manifest_cid,
        ),
    )
    nonce = await chain.nonce()

    if rival_cid == CID:
        result = await register_track(chain.reg, racing, rid, audio, CID, 1)
        assert result.already and result.tx_hash == racing.rival_sent.tx_hash
    else:
        with pytest.raises(ConflictingRegistration):
            await register_track(chain.reg, racing, rid, audio, CID, 1)
    assert racing.sends == 1
    assert await chain.nonce() == nonce  # our registerTrack reverted on estimation


async def test_mark_failed_refunds_once_and_then_skips(chain: Chain) -> None:
    rid = await chain.request()
    assert await chain.status(rid) == RequestStatus.PENDING

    sent = await mark_failed(chain.reg, chain.sender, rid, "content policy: named artist", 1)

    assert sent is not None and sent.status == 1
    block = sent.block_number
    balance = chain.w3.eth.get_balance
    address = chain.requester.address
    assert await balance(address, block) - await balance(address, block - 1) == FEE
    assert await chain.status(rid) == RequestStatus.FAILED
    nonce = await chain.nonce()
    assert await mark_failed(chain.reg, chain.sender, rid, "again", 1) is None
    assert await mark_failed(chain.reg, chain.sender, new_id(), "an HTTP id", 1) is None
    assert await chain.nonce() == nonce


async def test_a_failed_request_cannot_be_registered(chain: Chain) -> None:
    rid = await chain.request()
    await mark_failed(chain.reg, chain.sender, rid, "gave up", 1)
    with pytest.raises(ContractReverted) as info:
        await register_track(chain.reg, chain.sender, rid, keccak(b"late"), CID, 1)
    assert info.value.error_name == "NotPending"


async def test_register_completes_a_pending_on_chain_request(chain: Chain) -> None:
    rid = await chain.request()
    await register_track(chain.reg, chain.sender, rid, keccak(b"the track"), CID, 1)
    assert await chain.status(rid) == RequestStatus.REGISTERED
    assert await mark_failed(chain.reg, chain.sender, rid, "too late", 1) is None


async def test_an_http_request_is_registered_under_its_off_chain_id(chain: Chain) -> None:
    offchain_id = "0x" + new_id().hex()
    rid = offchain_request_id(31337, chain.reg.address, offchain_id)
    audio = keccak(b"an http track")
    first = await register_track(
        chain.reg, chain.sender, rid, audio, CID, 1, offchain_id=offchain_id
    )
    assert not first.already and first.request_id == rid
    assert await chain.reg.track_of(rid) == Track("0x" + audio.hex(), CID)
    # Registered (no requester: it never was a chain request).
    assert await chain.status(bytes.fromhex(rid[2:])) == RequestStatus.REGISTERED
    again = await register_track(
        chain.reg, chain.sender, rid, audio, CID, 1, offchain_id=offchain_id
    )
    assert again.already and again.tx_hash == first.tx_hash


async def test_registration_refuses_what_is_not_its_request(chain: Chain) -> None:
    # An id that was never requested here (a chain request that vanished in a reorg looks the
    # same): registerTrack refuses it, and it is no off-chain id's either.
    vanished = new_id()
    with pytest.raises(ContractReverted) as info:
        await register_track(chain.reg, chain.sender, vanished, keccak(b"phantom"), CID, 1)
    assert info.value.error_name == "NotPending"
    with pytest.raises(PermanentPublisherError, match="off-chain id"):
        await register_track(
            chain.reg,
            chain.sender,
            vanished,
            keccak(b"phantom"),
            CID,
            1,
            offchain_id="0x" + "11" * 32,
        )
    assert await chain.reg.track_of(vanished) is None
