"""TxSender: fee bumps and revert decoding in memory, then the real thing on a private anvil.

The anvil tests need a node whose mining they control (automine off to keep a transaction
pending, ``evm_mine`` to release it), so each gets its own `Anvil` on a free loopback port
and a fresh registry; nothing touches the shared stack. The sender's account is anvil's dev
account 1 (the publisher), the deployer is account 0, "another instance" account 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import TransactionNotFound

from acesteps import registry
from acesteps.chain import connect, deploy_registry
from acesteps.dev.devchain import dev_key
from acesteps.registry import Provenance, Registry
from acesteps.reverts import decode_revert
from publisher.errors import ContractReverted, InsufficientFunds, TxDropped
from publisher.provider import connect_for_sending
from publisher.txsender import TxSender
from publisher.txtypes import Fees, TxPolicy
from tests.integration.anvil import Anvil

T = TypeVar("T")
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
MANIFEST_HASH = b"\x03" * 32
MANIFEST_CID = Provenance.of(MANIFEST_HASH).manifest_cid
FAST = TxPolicy(poll_interval_s=0.02, pending_timeout_s=60, deadline_s=30)


# ---------------------------------------------------------------------- in memory


@given(st.integers(0, 10**30), st.integers(0, 10**30))
def test_a_bump_raises_both_fees_by_at_least_an_eighth(max_fee: int, priority: int) -> None:
    bumped = Fees(max_fee, priority).bumped()
    assert bumped.max_fee * 8 >= max_fee * 9 and bumped.max_fee > max_fee
    assert bumped.priority * 8 >= priority * 9 and bumped.priority > priority
    assert bumped.max_fee <= max_fee + max_fee // 8 + 1  # no more than needed


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def test_decode_revert_names_the_contracts_custom_errors() -> None:
    abi = registry.abi()
    rid = b"\x07" * 32
    data = "0x" + (_selector("AlreadyRegistered(bytes32)") + rid).hex()
    assert decode_revert(abi, data) == ("AlreadyRegistered", (rid,))
    assert decode_revert(abi, _selector("NotPublisher()")) == ("NotPublisher", ())
    wrong_fee = _selector("WrongFee(uint256,uint256)") + abi_encode(["uint256"] * 2, [5, 7])
    assert decode_revert(abi, wrong_fee) == ("WrongFee", (5, 7))


def test_decode_revert_knows_solidity_builtins_and_admits_the_rest() -> None:
    error = _selector("Error(string)") + abi_encode(["string"], ["no"])
    assert decode_revert([], error) == ("Error", ("no",))
    assert decode_revert([], _selector("Panic(uint256)") + (0x11).to_bytes(32)) == (
        "Panic",
        (0x11,),
    )
    assert decode_revert([], "0xdeadbeef") == ("unknown", ("0xdeadbeef",))
    assert decode_revert([], None) == ("unknown", ())


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TxPolicy(gas_margin=0.9)
    with pytest.raises(ValueError):
        TxPolicy(pending_timeout_s=0)


def test_raw_transactions_are_never_retried_by_the_provider() -> None:
    """A retried broadcast could come back "nonce too low" and cause a duplicate send."""
    ours = connect_for_sending("http://127.0.0.1:9")
    assert isinstance(ours.provider, AsyncHTTPProvider)
    config = ours.provider.exception_retry_configuration
    assert "eth_sendRawTransaction" not in config.method_allowlist
    assert "eth_getTransactionReceipt" in config.method_allowlist  # reads still retry

    theirs = AsyncWeb3(AsyncHTTPProvider("http://127.0.0.1:9"))
    assert isinstance(theirs.provider, AsyncHTTPProvider)
    assert (
        "eth_sendRawTransaction" in theirs.provider.exception_retry_configuration.method_allowlist
    )
    TxSender(theirs, dev_key(1))
    assert "eth_sendRawTransaction" not in (
        theirs.provider.exception_retry_configuration.method_allowlist
    )


def test_a_bad_key_is_refused_without_quoting_it() -> None:
    bad = "0x" + "ff" * 32  # above the curve order
    with pytest.raises(ValueError) as info:
        TxSender(connect_for_sending("http://127.0.0.1:9"), bad)
    assert "ff" * 32 not in str(info.value) and info.value.__cause__ is None


def test_the_key_is_not_in_the_repr() -> None:
    key = dev_key(1)
    sender = TxSender(connect_for_sending("http://127.0.0.1:9"), key)
    assert Account.from_key(key).address in repr(sender)
    assert key.removeprefix("0x") not in repr(sender) + str(vars(sender))


# ---------------------------------------------------------------------- on a private anvil


@dataclass
class Chain:
    anvil: Anvil
    w3: AsyncWeb3[Any]
    reg: AsyncContract
    me: LocalAccount

    def sender(self, policy: TxPolicy = FAST, key: str | None = None) -> TxSender:
        return TxSender(self.w3, key or dev_key(1), policy)

    def register_call(self, n: int | None = None) -> Any:
        rid = keccak(os.urandom(16)) if n is None else n.to_bytes(32)
        return self.reg.functions.registerOffchainTrack(
            rid, keccak(rid), CID, MANIFEST_HASH, MANIFEST_CID
        )

    async def nonce(self, tag: str = "latest") -> int:
        return await self.w3.eth.get_transaction_count(self.me.address, tag)  # type: ignore[arg-type]

    def pool(self) -> list[dict[str, Any]]:
        """Our pending transactions in the node's pool."""
        content: Any = self.anvil.rpc("txpool_content")
        mine = content["pending"].get(self.me.address.lower(), {})
        return [mine[k] for k in sorted(mine, key=int)]

    async def raw_send(self, account: LocalAccount, nonce: int, max_fee: int) -> str:
        """A plain transfer signed outside any TxSender."""
        tx = {
            "to": account.address,
            "value": 1,
            "gas": 21_000,
            "nonce": nonce,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": max_fee // 2,
            "chainId": 31337,
            "type": 2,
        }
        signed = account.sign_transaction(tx)
        return (await self.w3.eth.send_raw_transaction(signed.raw_transaction)).to_0x_hex()

    async def mined(self, tx_hash: str) -> bool:
        try:
            await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        return True


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    node = Anvil(tmp_path).start()
    w3 = connect(node.url)
    try:
        me = Account.from_key(dev_key(1))
        deployment = await deploy_registry(w3, dev_key(0), me.address)
        yield Chain(node, w3, Registry(w3, deployment.address).contract, me)
    finally:
        await w3.provider.disconnect()
        node.stop()


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 10.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if value := await probe():
                return value
            await asyncio.sleep(0.02)


async def test_send_returns_the_mined_receipt(chain: Chain) -> None:
    call = chain.register_call(1)
    before = await chain.nonce()
    sent = await chain.sender().send(call, confirmations=1)
    receipt = await chain.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]
    assert (sent.status, sent.block_number, sent.gas_used) == (
        1,
        receipt["blockNumber"],
        receipt["gasUsed"],
    )
    assert sent.sent == (sent.tx_hash,)
    assert await chain.nonce() == before + 1
    tx = await chain.w3.eth.get_transaction(sent.tx_hash)  # type: ignore[arg-type]
    assert tx["type"] == 2 and tx["gas"] > receipt["gasUsed"]  # estimated, with a margin


async def test_a_stuck_transaction_is_replaced_and_exactly_one_is_mined(chain: Chain) -> None:
    chain.anvil.rpc("evm_setAutomine", False)
    before = await chain.nonce()
    policy = TxPolicy(poll_interval_s=0.02, pending_timeout_s=0.2, deadline_s=30)
    task = asyncio.create_task(chain.sender(policy).send(chain.register_call(), confirmations=1))

    async def first_pending() -> dict[str, Any] | None:
        pool = chain.pool()
        return pool[0] if pool else None

    first = await eventually(first_pending)

    async def replaced() -> bool:
        pool = chain.pool()
        return bool(pool) and pool[0]["hash"] != first["hash"]

    await eventually(replaced)
    chain.anvil.rpc("evm_mine")
    sent = await asyncio.wait_for(task, 10)

    assert sent.status == 1 and len(sent.sent) >= 2 and sent.sent[0] == first["hash"]
    assert [h for h in sent.sent if await chain.mined(h)] == [sent.tx_hash]
    assert await chain.nonce() == before + 1
    tx = await chain.w3.eth.get_transaction(sent.tx_hash)  # type: ignore[arg-type]
    assert tx["nonce"] == int(first["nonce"], 16)
    assert tx["maxFeePerGas"] * 8 >= int(first["maxFeePerGas"], 16) * 9
    assert tx["maxPriorityFeePerGas"] * 8 >= int(first["maxPriorityFeePerGas"], 16) * 9


@pytest.mark.parametrize("limit", ["fee cap", "replacement limit"])
async def test_replacement_stops_at_its_limits(
    chain: Chain, limit: str, caplog: pytest.LogCaptureFixture
) -> None:
    base = (await chain.w3.eth.get_block("latest"))["baseFeePerGas"]
    market = 2 * base + await chain.w3.eth.max_priority_fee
    quick: Any = {"pending_timeout_s": 0.1, "poll_interval_s": 0.02, "deadline_s": 30}
    policy, expected = {
        # The first transaction already pays the cap: no valid replacement fits under it.
        "fee cap": (TxPolicy(max_fee_cap_wei=market, **quick), 1),
        "replacement limit": (TxPolicy(max_replacements=1, **quick), 2),
    }[limit]
    chain.anvil.rpc("evm_setAutomine", False)
    caplog.set_level(logging.WARNING, "publisher.txsender")
    task = asyncio.create_task(chain.sender(policy).send(chain.register_call(), confirmations=1))

    async def gave_up() -> bool:
        return "not replacing" in caplog.text

    await eventually(gave_up)
    chain.anvil.rpc("evm_mine")
    sent = await asyncio.wait_for(task, 10)
    assert len(sent.sent) == expected
    tx = await chain.w3.eth.get_transaction(sent.tx_hash)  # type: ignore[arg-type]
    assert tx["maxFeePerGas"] <= policy.max_fee_cap_wei


async def test_a_nonce_used_by_someone_else_is_resynced(
    chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    sender = chain.sender()
    await sender.send(chain.register_call(), confirmations=1)
    # Another process sends from the same key, so the sender's next local nonce is stale.
    outside = await chain.raw_send(chain.me, await chain.nonce("pending"), 10**10)
    assert await chain.mined(outside)
    before = await chain.nonce()

    caplog.set_level(logging.WARNING, "publisher.txsender")
    sent = await sender.send(chain.register_call(), confirmations=1)

    assert sent.status == 1
    assert "refused" in caplog.text and "re-syncing" in caplog.text
    assert await chain.nonce() == before + 1
    assert (await chain.w3.eth.get_transaction(sent.tx_hash))["nonce"] == before  # type: ignore[arg-type]


async def test_a_nonce_taken_while_pending_sends_the_call_again(chain: Chain) -> None:
    chain.anvil.rpc("evm_setAutomine", False)
    call = chain.register_call()
    task = asyncio.create_task(chain.sender().send(call, confirmations=1))

    async def ours() -> dict[str, Any] | None:
        pool = chain.pool()
        return pool[0] if pool else None

    first = await eventually(ours)
    nonce = int(first["nonce"], 16)
    # Someone replaces our transaction with a transfer at a much higher fee, and it is mined.
    outside = await chain.raw_send(chain.me, nonce, int(first["maxFeePerGas"], 16) * 10)
    chain.anvil.rpc("evm_mine")
    assert await chain.mined(outside)

    async def resent() -> dict[str, Any] | None:
        pool = chain.pool()
        return pool[0] if pool and int(pool[0]["nonce"], 16) == nonce + 1 else None

    await eventually(resent)
    chain.anvil.rpc("evm_mine")
    sent = await asyncio.wait_for(task, 10)

    assert not await chain.mined(first["hash"])
    assert (await chain.w3.eth.get_transaction(sent.tx_hash))["nonce"] == nonce + 1  # type: ignore[arg-type]
    assert sent.status == 1
    rid = await chain.reg.functions.offchainRequestId(call.args[0]).call()
    audio_hash, _ = await chain.reg.functions.trackOf(rid).call()
    assert audio_hash == call.args[1]


async def test_send_waits_for_the_confirmations(chain: Chain) -> None:
    task = asyncio.create_task(chain.sender().send(chain.register_call(), confirmations=3))

    async def mined_block() -> int | None:
        if task.done():
            return None  # would mean it returned without confirmations: fails below
        (entry,) = await chain.reg.events.TrackRegistered().get_logs(from_block=0) or [None]
        return int(entry["blockNumber"]) if entry else None

    block = await eventually(mined_block)
    for _ in range(2):  # 1 and 2 confirmations: not enough
        done, _pending = await asyncio.wait({task}, timeout=0.2)
        assert not done
        chain.anvil.rpc("evm_mine")
    sent = await asyncio.wait_for(task, 10)
    assert sent.block_number == block
    assert await chain.w3.eth.block_number - block + 1 >= 3


async def test_a_revert_on_estimation_sends_nothing(chain: Chain) -> None:
    sender = chain.sender()
    call = chain.register_call(5)
    await sender.send(call, confirmations=1)
    before = await chain.nonce("pending")

    with pytest.raises(ContractReverted) as info:
        await sender.send(chain.register_call(5), confirmations=1)
    assert info.value.error_name == "AlreadyRegistered"
    derived = await chain.reg.functions.offchainRequestId((5).to_bytes(32)).call()
    assert info.value.args_ == (derived,)
    assert info.value.tx_hash is None

    with pytest.raises(ContractReverted) as info:
        await chain.sender(key=dev_key(2)).send(chain.register_call(), confirmations=1)
    assert info.value.error_name == "NotPublisher"
    assert await chain.nonce("pending") == before


async def test_a_mined_revert_is_decoded_from_a_replay(chain: Chain) -> None:
    """Two publishers register one id in the same block: the cheaper one reverts on chain."""
    rival = Account.from_key(dev_key(2))
    owner = TxSender(chain.w3, dev_key(0), FAST)
    await owner.send(chain.reg.functions.setPublisher(rival.address, True), confirmations=1)
    chain.anvil.rpc("evm_setAutomine", False)
    task = asyncio.create_task(chain.sender().send(chain.register_call(9), confirmations=1))

    async def pending() -> list[dict[str, Any]]:
        return chain.pool()

    ours = (await eventually(pending))[0]
    # The rival pays ten times our tip, so the block puts it first.
    tx = await chain.register_call(9).build_transaction(
        {
            "from": rival.address,
            "nonce": await chain.w3.eth.get_transaction_count(rival.address),
            "gas": 500_000,
            "maxFeePerGas": int(ours["maxFeePerGas"], 16) * 10,
            "maxPriorityFeePerGas": int(ours["maxPriorityFeePerGas"], 16) * 10,
        }
    )
    signed = rival.sign_transaction(tx)
    rival_hash = await chain.w3.eth.send_raw_transaction(signed.raw_transaction)
    chain.anvil.rpc("evm_mine")

    with pytest.raises(ContractReverted) as info:
        await asyncio.wait_for(task, 10)
    assert info.value.error_name == "AlreadyRegistered"
    assert info.value.tx_hash == ours["hash"]
    rival_receipt = await chain.w3.eth.get_transaction_receipt(rival_hash)
    ours_receipt = await chain.w3.eth.get_transaction_receipt(ours["hash"])
    assert (rival_receipt["status"], ours_receipt["status"]) == (1, 0)
    assert rival_receipt["blockNumber"] == ours_receipt["blockNumber"]


async def test_an_empty_wallet_is_retryable_and_the_key_stays_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = Anvil(tmp_path).start()
    w3 = connect(node.url)
    try:
        poor = Account.create()
        key = "0x" + bytes(poor.key).hex()
        deployment = await deploy_registry(w3, dev_key(0), poor.address)
        reg = Registry(w3, deployment.address).contract
        caplog.set_level(logging.DEBUG)
        sender = TxSender(w3, key, FAST)
        with pytest.raises(InsufficientFunds) as info:
            await sender.send(
                reg.functions.registerOffchainTrack(
                    b"\x01" * 32, b"\x02" * 32, CID, MANIFEST_HASH, MANIFEST_CID
                ),
                confirmations=1,
            )
    finally:
        await w3.provider.disconnect()
        node.stop()
    secret = key.removeprefix("0x")
    for text in (str(info.value), repr(info.value), repr(sender), caplog.text):
        assert secret not in text.lower()


async def test_a_broadcast_the_node_already_holds_counts_as_sent(chain: Chain) -> None:
    """What a retried eth_sendRawTransaction meets: "already known" (anvil: "imported")."""
    chain.anvil.rpc("evm_setAutomine", False)
    sender = chain.sender()
    tx = await sender._prepare(chain.register_call(), 0)
    raw, tx_hash = sender._sign(tx, await chain.nonce("pending"), Fees(10**10, 10**9))
    await sender._send_raw(raw, tx_hash)
    await sender._send_raw(raw, tx_hash)  # no error: the same transaction
    assert [t["hash"] for t in chain.pool()] == [tx_hash]


async def test_concurrent_sends_get_consecutive_nonces(chain: Chain) -> None:
    sender = chain.sender()
    before = await chain.nonce()
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(sender.send(chain.register_call(), confirmations=1)) for _ in range(6)
        ]
    nonces = sorted(
        [(await chain.w3.eth.get_transaction(t.result().tx_hash))["nonce"] for t in tasks]  # type: ignore[arg-type]
    )
    assert nonces == list(range(before, before + 6))
    assert all(t.result().status == 1 for t in tasks)


async def test_a_transaction_a_reorg_dropped_neither_stalls_nor_waits(chain: Chain) -> None:
    """Mined, then orphaned by a reorg (anvil does not put it back in its pool): waiting for
    its confirmations fails at once, and the next send takes its nonce instead of queueing
    behind a gap that would never be filled."""
    sender = chain.sender()
    first = await sender.send(chain.register_call(), confirmations=1)
    nonce = await chain.nonce()  # the first one's nonce + 1
    chain.anvil.rpc("anvil_reorg", 1, [])
    assert await chain.nonce() == nonce - 1

    with pytest.raises(TxDropped):
        await asyncio.wait_for(sender.wait_for_confirmations(first.tx_hash, 2), 5)
    second = await asyncio.wait_for(sender.send(chain.register_call(), confirmations=1), 10)
    tx = await chain.w3.eth.get_transaction(second.tx_hash)  # type: ignore[arg-type]
    assert tx["nonce"] == nonce - 1 and second.status == 1
    assert not await chain.mined(first.tx_hash)


async def test_a_transaction_queued_behind_dropped_nonces_gets_the_gap_filled(
    chain: Chain,
) -> None:
    """A's call already returned when a reorg drops it; B, sent after A with the next nonce,
    waits in the pool behind a nonce nothing holds any more. The sender fills that nonce with
    a no-op (the dropped call is its caller's to send again), and B is mined."""
    sender = chain.sender()
    first = await sender.send(chain.register_call(), confirmations=1)
    gap = (await chain.w3.eth.get_transaction(first.tx_hash))["nonce"]  # type: ignore[arg-type]
    chain.anvil.rpc("evm_setAutomine", False)
    task = asyncio.create_task(sender.send(chain.register_call(), confirmations=1))
    await eventually(lambda: _pooled(chain))
    chain.anvil.rpc("anvil_reorg", 1, [])  # A's block is gone; B stays in the pool

    async def mining() -> None:
        while True:
            chain.anvil.rpc("evm_mine")
            await asyncio.sleep(0.2)

    miner = asyncio.create_task(mining())
    try:
        second = await asyncio.wait_for(task, 20)
    finally:
        miner.cancel()
    assert second.status == 1
    assert (await chain.w3.eth.get_transaction(second.tx_hash))["nonce"] == gap + 1  # type: ignore[arg-type]
    fills = []
    for number in range(max(0, second.block_number - 10), second.block_number + 1):
        block = await chain.w3.eth.get_block(number, full_transactions=True)
        fills += [tx for tx in block["transactions"] if tx["from"] == chain.me.address]
    fills = [tx for tx in fills if tx["nonce"] == gap]
    assert fills and fills[0]["to"] == chain.me.address and fills[0]["value"] == 0
    assert not await chain.mined(first.tx_hash)


async def _pooled(chain: Chain) -> bool:
    return bool(chain.pool())
