"""The chain listener as a real process, against a private anvil and the real Kafka.

Every check reads the topics with a read_committed consumer: what a downstream service sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from acesteps.dev.localstack import StackSettings
from acesteps.messages import (
    GenerationFailed,
    GenerationRequest,
    GenerationRevoked,
    decode,
)
from acesteps.settings import CommonSettings
from tests.integration.anvil import Anvil
from tests.integration.chainload import ChainLoader, Requested
from tests.integration.kafkaread import eventually, read_all
from tests.integration.listening import (
    ListenerProcess,
    of_type,
    requests_topic,
    wait_checkpoint,
)
from tests.integration.rpcproxy import FAULTS, RpcProxy


@pytest.fixture
def start_listener(topics: CommonSettings, anvil: Anvil, listeners: list[ListenerProcess]):  # type: ignore[no-untyped-def]
    """Deploy a registry on this test's anvil and start a listener on it."""

    def start(confirmations: int) -> tuple[ChainLoader, str, ListenerProcess]:
        loader = ChainLoader(anvil.url)
        contract = loader.deploy()
        proc = ListenerProcess(topics, anvil, contract, confirmations=confirmations)
        listeners.append(proc.start())
        return loader, contract, proc

    return start


def assert_exactly_once_in_order(records: list[Any], expected: list[Requested]) -> None:
    requests = [(r, decode(GenerationRequest, r.value)) for r in records]
    ids = [req.request_id for _, req in requests]
    assert len(ids) == len(set(ids)), "a request was emitted twice"
    assert set(ids) == {e.request_id for e in expected}
    # Within each partition (hence for each key) the records follow block and log order.
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for rec, req in requests:
        assert rec.key == req.request_id.encode()
        assert req.chain is not None
        by_partition.setdefault(rec.partition, []).append(
            (req.chain.block_number, req.chain.log_index)
        )
    for positions in by_partition.values():
        assert positions == sorted(positions)
    where = {e.request_id: (e.block_number, e.log_index) for e in expected}
    for _, req in requests:
        assert req.chain is not None
        assert (req.chain.block_number, req.chain.log_index) == where[req.request_id]


# ---------------------------------------------------------------------- backfill


@pytest.fixture(scope="module")
def loaded_chain() -> Iterator[tuple[Anvil, ChainLoader, str, list[Requested]]]:
    """10,000+ blocks holding 1,000 requests, 10 to a block; built once, only read."""
    node = Anvil(StackSettings().log_dir, keep_states=256).start()
    try:
        loader = ChainLoader(node.url)
        contract = loader.deploy()
        expected = loader.bulk(requests=1000, per_block=10, empty_blocks_between=99)
        assert len(expected) == 1000 and loader.head() >= 10_000
        yield node, loader, contract, expected
    finally:
        node.stop()


async def test_backfill_arrives_exactly_once_in_order(
    topics: CommonSettings,
    loaded_chain,
    listeners,  # type: ignore[no-untyped-def]
) -> None:
    anvil, loader, contract, expected = loaded_chain
    proc = ListenerProcess(topics, anvil, contract, confirmations=1, max_block_range=2000)
    listeners.append(proc.start())
    await wait_checkpoint(topics, loader.head() - 1, proc, timeout_s=120)
    assert_exactly_once_in_order(await requests_topic(topics), expected)


async def test_backfill_survives_kill9_mid_way(
    topics: CommonSettings,
    loaded_chain,
    listeners,  # type: ignore[no-untyped-def]
) -> None:
    anvil, loader, contract, expected = loaded_chain
    # Small ranges: about a hundred transactions, so the kill lands in the middle.
    proc = ListenerProcess(topics, anvil, contract, confirmations=1, max_block_range=100)
    listeners.append(proc.start())
    await wait_checkpoint(topics, expected[300].block_number, proc)
    proc.kill9()
    done_before = len(await requests_topic(topics))
    assert 0 < done_before < len(expected)
    again = ListenerProcess(topics, anvil, contract, confirmations=1, max_block_range=100)
    listeners.append(again.start())
    await wait_checkpoint(topics, loader.head() - 1, again, timeout_s=120)
    assert_exactly_once_in_order(await requests_topic(topics), expected)
    # The uncommitted work of the killed process was written but never made visible.
    everything = await read_all(topics.kafka_bootstrap, topics.topics.requests, "read_uncommitted")
    assert len(everything) >= len(expected)


# ---------------------------------------------------------------------- reorgs


async def test_reorg_shallower_than_confirmations_emits_nothing_orphaned(
    topics: CommonSettings,
    anvil: Anvil,
    start_listener,  # type: ignore[no-untyped-def]
) -> None:
    loader, _, proc = start_listener(confirmations=4)
    (orphan,) = loader.requested([loader.request("soon orphaned")])
    loader.mine(1)  # two blocks deep: below the confirmation depth
    loader.reorg(2)
    # Another requester: ids derive from (sender, counter), and the counter was rolled back.
    other = ChainLoader(anvil.url, account=1)
    other.registry = loader.registry
    (kept,) = other.requested([other.request("on the new branch")])
    loader.mine(6)
    await wait_checkpoint(topics, loader.head() - 4, proc)
    records = await requests_topic(topics)
    assert [r.request_id for r in of_type(records, GenerationRequest)] == [kept.request_id]
    assert of_type(records, GenerationRevoked) == []
    assert orphan.request_id != kept.request_id


async def test_reorg_deeper_than_confirmations_revokes_the_request(
    topics: CommonSettings,
    anvil: Anvil,
    start_listener,  # type: ignore[no-untyped-def]
) -> None:
    loader, _, proc = start_listener(confirmations=1)
    (gone,) = loader.requested([loader.request("will vanish")])
    loader.mine(3)
    await wait_checkpoint(topics, gone.block_number, proc)
    assert [r.request_id for r in of_type(await requests_topic(topics), GenerationRequest)] == [
        gone.request_id
    ]
    loader.reorg(5)  # orphans the request's block
    loader.mine(3)
    await wait_checkpoint(topics, loader.head() - 1, proc)
    records = await requests_topic(topics)
    (revoked,) = of_type(records, GenerationRevoked)
    assert revoked.request_id == gone.request_id
    assert revoked.block_number == gone.block_number
    assert len(of_type(records, GenerationRequest)) == 1


# ---------------------------------------------------------------------- the node goes away


async def test_rpc_node_stopped_and_restarted_loses_nothing(
    topics: CommonSettings,
    anvil: Anvil,
    start_listener,  # type: ignore[no-untyped-def]
) -> None:
    loader, contract, proc = start_listener(confirmations=0)
    first = loader.requested([loader.request(f"before {i}") for i in range(5)])
    await wait_checkpoint(topics, first[-1].block_number, proc)
    anvil.stop()
    await eventually(lambda: _log_mentions(proc, "retrying"), 30, "the listener to retry")
    assert proc.alive()
    anvil.start()  # same port, state reloaded
    loader = ChainLoader(anvil.url)
    loader.registry = loader.w3.eth.contract(address=contract, abi=loader.registry_abi())
    second = loader.requested([loader.request(f"after {i}") for i in range(5)])
    await wait_checkpoint(topics, second[-1].block_number, proc)
    assert_exactly_once_in_order(await requests_topic(topics), first + second)


async def _log_mentions(proc: ListenerProcess, words: str) -> bool:
    return words in proc.log.read_text(errors="replace")


# ---------------------------------------------------------------------- hostile events


async def test_hostile_events_become_failures_and_impostors_are_ignored(
    topics: CommonSettings,
    anvil: Anvil,
    start_listener,  # type: ignore[no-untyped-def]
) -> None:
    loader, _, proc = start_listener(confirmations=0)
    impostor = loader.impostor()
    big = loader.requested([loader.request("é" * 500)])  # 1,000 bytes: the maximum
    bad_utf8 = loader.requested([loader.raw_request(b"\xc3\x28 broken", b"", 30)])
    loader.wait(loader.call(impostor.functions.fire(b"\x01" * 32)))
    last = loader.requested([loader.request("the last one")])
    await wait_checkpoint(topics, last[0].block_number, proc)

    # Records are spread over partitions: put them back in chain order.
    requests = sorted(
        of_type(await requests_topic(topics), GenerationRequest), key=lambda r: r.chain.block_number
    )
    assert [r.request_id for r in requests] == [big[0].request_id, last[0].request_id]
    assert requests[0].prompt == "é" * 500
    failures = [
        decode(GenerationFailed, r.value)
        for r in await read_all(topics.kafka_bootstrap, topics.topics.failures)
    ]
    assert [(f.request_id, f.code) for f in failures] == [(bad_utf8[0].request_id, "invalid_utf8")]
    assert "prompt is not valid UTF-8" in failures[0].message
    assert failures[0].stage == "listener" and failures[0].source == "chain"
    assert proc.alive()


async def test_a_troubled_rpc_provider_costs_time_never_a_request(
    topics: CommonSettings, anvil: Anvil, listeners: list[ListenerProcess]
) -> None:
    # Rate limits (JSON-RPC -32005, which Infura also uses for too-large ranges; HTTP 429 with
    # Retry-After), 502s, cut bodies and hangs past the client's timeout, again and again
    # while requests keep coming: the listener waits them out, never halves its range for a
    # rate limit, never stops, and emits every request once.
    loader = ChainLoader(anvil.url)
    contract = loader.deploy()
    proxy = await RpcProxy(anvil.url).start()
    proxy.hang_s = 3.0
    try:
        first = loader.requested([loader.request(f"before {i}") for i in range(3)])
        anvil.rpc("anvil_mine", hex(1))
        proc = ListenerProcess(topics, proxy.url, contract, confirmations=1)
        proc.env["ACESTEPS_RPC_TIMEOUT_S"] = "1"
        listeners.append(proc.start())
        await wait_checkpoint(topics, first[-1].block_number, proc)

        proxy.fail([*FAULTS] * 4)
        later = loader.requested([loader.request(f"during {i}") for i in range(3)])
        anvil.rpc("anvil_mine", hex(1))
        await wait_checkpoint(topics, later[-1].block_number, proc, timeout_s=120)

        assert proc.alive()
        assert proxy.faulted == 4 * len(FAULTS)
        emitted = [r.request_id for r in of_type(await requests_topic(topics), GenerationRequest)]
        assert sorted(emitted) == sorted(r.request_id for r in [*first, *later])
        assert proc.mentions("rate-limited") and not proc.mentions("node refused")
    finally:
        await proxy.stop()
