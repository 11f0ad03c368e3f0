"""Reorgs against the real services: ``anvil_reorg`` on a private anvil, the real Kafka and Kubo.

The listener alone: a re-included request keeps its id and is emitted once, a reorg that lands
between two of its reads (held back by a JSON-RPC proxy) or while it is down is still seen.
The whole pipeline: a request that vanishes is never registered, a registration that a reorg
drops is sent again (and the publisher does not stall on its own dropped transaction), and
twenty requests under random reorgs end with the chain and the API in agreement.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak

from acesteps.bytesources import KuboSource
from acesteps.chain import connect
from acesteps.finality import Finality
from acesteps.ipfs.kubo import KuboClient
from acesteps.messages import TYPE_HEADER, GenerationRequest, GenerationRevoked
from acesteps.registry import Registry, request_id_of
from acesteps.settings import CommonSettings
from acesteps.verify import Verdict, verify
from tests.integration.anvil import Anvil
from tests.integration.chainload import ChainLoader, Requested
from tests.integration.kafkaread import eventually, read_all
from tests.integration.listening import (
    ListenerProcess,
    checkpoint,
    of_type,
    requests_topic,
    wait_checkpoint,
)
from tests.integration.pipeline import (
    Pipeline,
    record,
    record_where,
    running_pipeline,
    wait_healthy,
)
from tests.integration.rpcproxy import RpcProxy


def mine(anvil: Anvil, blocks: int) -> None:
    anvil.rpc("anvil_mine", hex(blocks))


def head(anvil: Anvil) -> int:
    return int(str(anvil.rpc("eth_blockNumber")), 16)


async def emitted(settings: CommonSettings) -> tuple[list[str], list[str]]:
    """(request ids emitted; request ids revoked), each in the order of its partition."""
    records = await requests_topic(settings)
    requests = [r.request_id for r in of_type(records, GenerationRequest)]
    revoked = [r.request_id for r in of_type(records, GenerationRevoked)]
    return requests, revoked


# ---------------------------------------------------------------------- the listener


async def test_a_request_re_included_in_another_block_keeps_its_id(
    topics: CommonSettings, anvil: Anvil, listeners: list[ListenerProcess]
) -> None:
    # Two requesters; a reorg drops both requests and re-includes only the second one, in
    # another block. With ids from a running counter, the second would have been renumbered.
    first = ChainLoader(anvil.url, account=2)
    contract = first.deploy()
    second = ChainLoader(anvil.url, account=3).attach(contract)
    (gone,) = first.requested([first.request("first")])
    kept_tx = second.request("second")
    (kept,) = second.requested([kept_tx])
    mine(anvil, 1)
    listeners.append(ListenerProcess(topics, anvil, contract, confirmations=1).start())
    await wait_checkpoint(topics, kept.block_number, listeners[0])

    # Both blocks replaced (deeper than the confirmations); the second request comes back in
    # the middle of the new branch.
    depth = head(anvil) - gone.block_number + 1
    anvil.rpc("anvil_reorg", depth, [[second.raw[kept_tx], 2]])
    mine(anvil, 2)
    await wait_checkpoint(topics, head(anvil) - 1, listeners[0])

    requests, revoked = await emitted(topics)
    assert sorted(requests) == sorted([gone.request_id, kept.request_id])  # once, same ids
    assert revoked == [gone.request_id]
    receipt = second.wait(kept_tx)
    assert receipt["blockNumber"] != kept.block_number  # it did move


async def test_a_reorg_landing_between_two_reads_is_not_missed(
    topics: CommonSettings, anvil: Anvil, listeners: list[ListenerProcess]
) -> None:
    # The listener checks that its checkpoint is still the parent of the next block, then
    # reads the next range. The proxy holds the answer of that check until a reorg has
    # replaced both blocks: the answer says "linked", the range read is of the new chain.
    loader = ChainLoader(anvil.url)
    contract = loader.deploy()
    proxy = await RpcProxy(anvil.url).start()
    try:
        (request,) = loader.requested([loader.request("soon gone")])
        mine(anvil, 1)
        proc = ListenerProcess(topics, proxy.url, contract, confirmations=1).start()
        listeners.append(proc)
        await wait_checkpoint(topics, request.block_number, proc)
        cp = await checkpoint(topics)
        assert (await emitted(topics))[0] == [request.request_id]

        link = proxy.hold_next(
            lambda call: (
                call["method"] == "eth_getBlockByNumber" and call["params"][0] == hex(cp + 1)
            )
        )
        mine(anvil, 1)  # confirms block cp + 1: the listener reads on, starting with the link
        await asyncio.wait_for(link.arrived.wait(), 30)  # the listener's link check
        anvil.rpc("anvil_reorg", head(anvil) - request.block_number + 1, [])
        mine(anvil, 3)
        link.release()

        await eventually(
            lambda: _revoked(topics, request.request_id), 60, "the request's revocation"
        )
        requests, revoked = await emitted(topics)
        assert requests == [request.request_id] and revoked == [request.request_id]
    finally:
        await proxy.stop()


async def _revoked(settings: CommonSettings, request_id: str) -> bool:
    return request_id in (await emitted(settings))[1]


async def test_a_reorg_while_the_listener_is_down_is_seen_when_it_comes_back(
    topics: CommonSettings, anvil: Anvil, listeners: list[ListenerProcess]
) -> None:
    loader = ChainLoader(anvil.url)
    contract = loader.deploy()
    (request,) = loader.requested([loader.request("made while up")])
    mine(anvil, 2)
    proc = ListenerProcess(topics, anvil, contract, confirmations=2).start()
    listeners.append(proc)
    await wait_checkpoint(topics, request.block_number, proc)
    proc.kill9()

    anvil.rpc("anvil_reorg", head(anvil) - request.block_number + 1, [])
    loader.resync()
    (later,) = loader.requested([loader.request("made while down")])
    mine(anvil, 3)
    listeners.append(ListenerProcess(topics, anvil, contract, confirmations=2).start())
    await eventually(lambda: _revoked(topics, request.request_id), 60, "the revocation")
    await wait_checkpoint(topics, later.block_number, listeners[-1])

    requests, revoked = await emitted(topics)
    assert sorted(requests) == sorted([request.request_id, later.request_id])
    assert revoked == [request.request_id]


# ---------------------------------------------------------------------- the whole pipeline

# Blocks every half second (the pipeline's anvil); requests processed two blocks deep,
# registrations published one block deep and final twenty deep: a reorg of a few blocks can
# drop a published registration, or a request the listener already emitted.
REORG_SETTINGS = {
    "listener": {"ACESTEPS_LISTENER_CONFIRMATIONS": "2"},
    "publisher": {"ACESTEPS_FINALITY_DEPTH": "20"},
}


def registrations(pipeline: Pipeline) -> list[tuple[str, str]]:
    """(request id, tx hash) of every TrackRegistered on the chain as it is now."""
    reg = pipeline.chain.registry
    logs = reg.events.TrackRegistered().get_logs(from_block=0)
    return [
        ("0x" + bytes(e["args"]["requestId"]).hex(), "0x" + e["transactionHash"].hex())
        for e in logs
    ]


def on_chain_status(pipeline: Pipeline, request_id: str) -> int:
    return int(pipeline.chain.registry.functions.requests(bytes.fromhex(request_id[2:])).call()[1])


async def generating(pipeline: Pipeline, tx_hash: str) -> Requested:
    """The request ``tx_hash`` made, once the generator is at work on it."""
    (request,) = pipeline.chain.requested([tx_hash])
    await record_where(
        pipeline, request.request_id, lambda g: g["status"] == "generating", "generation"
    )
    return request


async def test_a_request_that_vanishes_before_its_registration_is_never_registered(
    stack: CommonSettings,
) -> None:
    with running_pipeline(
        stack, start=("listener", "generator"), settings=REORG_SETTINGS
    ) as pipeline:
        anvil = pipeline.anvil
        request = await generating(
            pipeline, pipeline.chain.request("gone before it is published", 5)
        )
        anvil.rpc("anvil_reorg", head(anvil) - request.block_number + 1, [])
        await record_where(
            pipeline, request.request_id, lambda g: g["status"] == "revoked", "its revocation"
        )
        publisher = pipeline.start("publisher")
        await eventually(
            lambda: _said(publisher.mentions("is not on chain")), 120, "the publisher's refusal"
        )
        assert registrations(pipeline) == []
        assert on_chain_status(pipeline, request.request_id) == 0  # unknown to this chain
        assert record(pipeline, request.request_id)["status"] == "revoked"


async def _said(value: bool) -> bool:
    return value


async def test_a_request_that_a_reorg_only_moved_is_registered_though_it_was_gone_a_while(
    stack: CommonSettings,
) -> None:
    # A reorg drops the request's block while the listener is down; the publisher meets the
    # generated track while the request is gone; the requester sends it again, and the
    # listener, back, finds it re-included in its rescan (no revocation, no second request).
    # The publisher must not have given up on it: it waits until the request's block would
    # be final, and registers the track once the request is back.
    with running_pipeline(
        stack, start=("listener", "generator"), settings=REORG_SETTINGS
    ) as pipeline:
        anvil, chain = pipeline.anvil, pipeline.chain
        tx = chain.request("moved by a reorg", 5)
        request = await generating(pipeline, tx)
        pipeline.services["listener"].kill9()
        anvil.rpc("anvil_reorg", head(anvil) - request.block_number + 1, [])
        publisher = pipeline.start("publisher")
        await eventually(
            lambda: _said(publisher.mentions("not on chain now")), 120, "the publisher waiting"
        )
        assert not publisher.mentions("not publishing it")

        send_raw(pipeline, chain.raw[tx])
        back = chain.wait(tx)
        mine(anvil, 3)  # past the listener's confirmations, before its restart
        pipeline.start("listener")
        wait_healthy(pipeline.api_url, pipeline)
        done = await record_where(
            pipeline,
            request.request_id,
            lambda g: g["status"] == "completed" and g["final"],
            "the track registered, final",
        )
        assert back["blockNumber"] != request.block_number  # it did move
        assert registrations(pipeline) == [(request.request_id, done["txHash"])]
        records = await read_all(stack.kafka_bootstrap, f"{pipeline.prefix}.requests.v1")
        announced = [r.request_id for r in of_type(records, GenerationRequest)]
        assert announced == [request.request_id]  # announced once, never revoked
        assert of_type(records, GenerationRevoked) == []


async def test_a_dropped_registration_is_sent_again_without_stalling_the_next(
    stack: CommonSettings,
) -> None:
    with running_pipeline(stack, settings=REORG_SETTINGS) as pipeline:
        anvil, chain = pipeline.anvil, pipeline.chain
        (first,) = chain.requested([chain.request("registered, then reorged out", 5)])
        done = await record_where(
            pipeline, first.request_id, lambda g: g["status"] == "completed", "registration"
        )
        dropped_tx, dropped_block = done["txHash"], done["blockNumber"]
        assert not done["final"] and first.block_number < dropped_block

        # Drop the registration's block (the request's survives): the publisher's own
        # transaction is gone, and its next nonce with it.
        anvil.rpc("anvil_reorg", head(anvil) - dropped_block + 1, [])
        chain.resync()
        (second,) = chain.requested([chain.request("the next one", 5)])

        again = await record_where(
            pipeline,
            first.request_id,
            lambda g: g["status"] == "completed" and g["txHash"] not in (None, dropped_tx),
            "the first track registered again",
        )
        nxt = await record_where(
            pipeline, second.request_id, lambda g: g["status"] == "completed", "the next track"
        )
        # No stall: the next track was registered within a few blocks of being generated.
        assert nxt["blockNumber"] - second.block_number < 30, (nxt, second)
        final = await record_where(
            pipeline, first.request_id, lambda g: g["final"], "the new registration final"
        )
        assert final["txHash"] == again["txHash"]
        assert sorted(registrations(pipeline)) == sorted(
            [(first.request_id, again["txHash"]), (second.request_id, nxt["txHash"])]
        )


async def test_twenty_requests_under_random_reorgs_end_with_chain_and_api_agreeing(
    stack: CommonSettings,
) -> None:
    # REORG_SEED=N explores other interleavings (the seed picks waits, depths and resends).
    rng = random.Random(int(os.environ.get("REORG_SEED", "20")))
    with running_pipeline(
        stack, settings={**REORG_SETTINGS, "publisher": {"ACESTEPS_FINALITY_DEPTH": "4"}}
    ) as pipeline:
        anvil = pipeline.anvil
        sent: dict[str, str] = {}  # request id -> its signed transaction
        for n in range(20):
            # Each request from an account of its own: a dropped one can be sent again alone.
            rid, raw = request_from_new_account(pipeline, f"request {n} under reorgs")
            sent[rid] = raw
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            if rng.random() < 0.5:
                anvil.rpc("anvil_reorg", rng.randint(1, 3), [])
                for raw in sent.values():  # some dropped requests come back, some do not
                    if not mined(pipeline, raw) and rng.random() < 0.5:
                        send_raw(pipeline, raw)

        # Settle: no more reorgs; every request the chain holds now is registered, final.
        async def settled() -> bool:
            on_chain = requested_on_chain(pipeline)
            records = {rid: record(pipeline, rid) for rid in sent}
            return all(
                records[rid]["status"] == "completed" and records[rid]["final"] for rid in on_chain
            ) and all(
                # Revoked, or never seen: dropped before the listener's confirmations.
                records[rid]["status"] in ("revoked", None)
                for rid in set(sent) - on_chain
            )

        try:
            await eventually(settled, 240, "the chain and the API to settle", interval_s=1)
        except AssertionError:
            raise AssertionError(unsettled(pipeline, sent)) from None

        on_chain = requested_on_chain(pipeline)
        assert on_chain <= set(sent)
        tracks = await read_all(stack.kafka_bootstrap, f"{pipeline.prefix}.tracks.v1")
        kinds = Counter(dict(r.headers)[TYPE_HEADER].decode() for r in tracks)
        revoked = {rid for rid in sent if record(pipeline, rid)["status"] == "revoked"}
        print(f"\n{len(on_chain)} of 20 on chain, {len(revoked)} revoked, tracks topic: {kinds}")
        # The reorgs did bite: requests vanished, or registrations had to be sent again.
        assert revoked or kinds["RegistrationReorged"] or len(on_chain) < 20
        registered = registrations(pipeline)
        registered_ids = [rid for rid, _ in registered]
        # No phantom, no duplicate: exactly the requests on chain, each registered once, each
        # as a chain request; what the API calls completed is exactly that set.
        assert sorted(registered_ids) == sorted(on_chain)
        assert all(on_chain_status(pipeline, rid) == 2 for rid in on_chain)  # REGISTERED
        completed = {rid for rid in sent if record(pipeline, rid)["status"] == "completed"}
        assert completed == on_chain
        for rid, tx_hash in registered:
            assert record(pipeline, rid)["txHash"] == tx_hash
        # Verified as anyone would: MATCH for every real track, nothing for the others.
        for rid in sent:
            verdict = await verify_against(pipeline, stack, rid)
            assert verdict.status.value == ("MATCH" if rid in on_chain else "NOT_REGISTERED"), (
                verdict
            )
            if rid in on_chain:
                assert verdict.final


def unsettled(pipeline: Pipeline, sent: dict[str, str]) -> str:
    """What did not settle, shortest first (a CI log keeps only so much): each request that
    the chain and the API disagree on, the chain's head, the services, then their logs."""
    on_chain = requested_on_chain(pipeline)
    lines = [f"head {head(pipeline.anvil)}; {len(on_chain)} of {len(sent)} requests on chain"]
    for rid in sent:
        g = record(pipeline, rid)
        fine = (
            (g["status"] == "completed" and g["final"])
            if rid in on_chain
            else (g["status"] in ("revoked", None))
        )
        if not fine:
            short = {k: g.get(k) for k in ("status", "final", "txHash", "blockNumber", "error")}
            lines.append(f"{rid} ({'on' if rid in on_chain else 'not on'} chain): {short}")
    alive = {name: proc.alive() for name, proc in pipeline.services.items()}
    lines.append(f"services alive: {alive}")
    for rid in sent:  # what the services said about the requests that did not settle
        if any(line.startswith(rid) for line in lines):
            for name, proc in pipeline.services.items():
                said = [line for line in proc.text().splitlines() if rid in line]
                lines += [f"  {name}: {line[:300]}" for line in said[-6:]]
    return "\n".join(lines) + f"\n{pipeline.logs()}"


def request_from_new_account(pipeline: Pipeline, prompt: str) -> tuple[str, str]:
    """requestGeneration from a fresh funded account (nonce 0); (request id, signed tx)."""
    account = Account.create()
    pipeline.anvil.rpc("anvil_setBalance", account.address, hex(10**18))
    tx = {
        "to": pipeline.contract,
        "data": "0x" + pipeline.chain.request_data(prompt, "", 5).hex(),
        "chainId": 31337,
        "gas": 500_000,
        "maxFeePerGas": 10**11,
        "maxPriorityFeePerGas": 10**9,
        "nonce": 0,
    }
    raw = "0x" + bytes(account.sign_transaction(tx).raw_transaction).hex()
    salt_input = abi_encode(["uint256", "string", "string", "uint32"], [0, prompt, "", 5])
    rid = request_id_of(31337, pipeline.contract, account.address, keccak(salt_input))
    send_raw(pipeline, raw)
    return rid, raw


def send_raw(pipeline: Pipeline, raw: str) -> None:
    with contextlib.suppress(RuntimeError):  # "already known", "nonce too low": it is there
        pipeline.anvil.rpc("eth_sendRawTransaction", raw)


def mined(pipeline: Pipeline, raw: str) -> bool:
    tx_hash = "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    return pipeline.anvil.rpc("eth_getTransactionReceipt", tx_hash) is not None


def requested_on_chain(pipeline: Pipeline) -> set[str]:
    logs = pipeline.chain.registry.events.GenerationRequested().get_logs(from_block=0)
    return {"0x" + bytes(e["args"]["requestId"]).hex() for e in logs}


async def verify_against(pipeline: Pipeline, stack: CommonSettings, rid: str) -> Verdict:
    w3 = connect(pipeline.anvil.url)
    try:
        async with KuboClient(stack.ipfs_api_url) as kubo:
            source = KuboSource(kubo, stack.ipfs_api_url)
            return await verify(
                Registry(w3, pipeline.contract), rid, source, finality=Finality(depth=4)
            )
    finally:
        await w3.provider.disconnect()
