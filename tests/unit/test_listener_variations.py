"""Variations of chain requests: the contract makes them (`acesteps.variations`), one
transaction holding the request and each variation's ``GenerationRequested``,
``RequestOptions`` and ``VariationRequested``; the listener turns them into one ordinary
request each, the variations naming their parent and index."""

from __future__ import annotations

import dataclasses

from eth_abi.abi import encode as abi_encode

from acesteps.chainoptions import OPTIONS_TYPE, encode_options
from acesteps.messages import GenerationFailed, GenerationRequest, GenerationRevoked
from acesteps.registry import event_topic
from acesteps.variations import default_seed, variation_key
from listener.chainreader import RawLog
from tests.unit.test_listener_poller import (
    TOPIC0,
    FakeChain,
    MemorySink,
    drain,
    payload,
    poller,
    rid,
)

OPTIONS = event_topic("RequestOptions")
VARIATION = event_topic("VariationRequested")

Log = tuple[str, bytes] | tuple[str, bytes, str]


class VariationsChain(FakeChain):
    """FakeChain whose logs come as the contract emits them: a transaction starts at each
    ``GenerationRequested`` that is no variation; ``RequestOptions`` carries one indexed
    topic (the request id), ``VariationRequested`` two (the request id and its parent's)."""

    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[str, str] = {}

    async def logs(self, start: int, end: int) -> list[RawLog]:
        out = await super().logs(start, end)
        for i, log in enumerate(out):
            topic0, request_id = log.topics[0], log.topics[1]
            topics = log.topics
            if topic0 == OPTIONS:
                topics = log.topics[:2]
            elif topic0 == VARIATION:
                topics = (topic0, request_id, self.parents[request_id])
            joins = topic0 != TOPIC0 or request_id in self.parents
            tx_hash = out[i - 1].tx_hash if joins else log.tx_hash
            out[i] = dataclasses.replace(log, tx_hash=tx_hash, topics=topics)
        return out

    def request(
        self, parent: str, variations: int, seed: int | None = None, **asked: object
    ) -> list[Log]:
        """The logs of ``requestGenerationWithOptions`` asking ``variations`` tracks: what the
        contract emits (the variations' seeds: the parent's + index, modulo 2^32)."""
        logs: list[Log] = [
            (parent, payload()),
            (parent, _options(seed=seed, variations=variations, **asked), OPTIONS),
        ]
        base = default_seed(parent) if seed is None else seed
        for index in range(1, variations):
            child = variation_key(parent, index)
            self.parents[child] = parent
            logs += [
                (child, payload()),
                (child, _options(seed=(base + index) % 2**32, **asked), OPTIONS),
                (child, abi_encode(["uint8"], [index]), VARIATION),
            ]
        return logs


def _options(**asked: object) -> bytes:
    data = abi_encode([OPTIONS_TYPE], [encode_options(**asked)])  # type: ignore[arg-type]
    return abi_encode(["bytes"], [data])


def _by_id(sink: MemorySink) -> dict[str, GenerationRequest]:
    return {r.request_id: r for r in sink.of(GenerationRequest)}  # type: ignore[misc]


async def test_a_request_with_variations_is_one_request_per_track() -> None:
    chain, sink = VariationsChain(), MemorySink()
    chain.mine(
        *chain.request(rid(1), 3, bpm=96, tags=("waltz",)),
        (rid(2), payload()),  # a plain request beside it
        *chain.request(rid(3), 2, seed=2**32 - 1),  # an explicit seed, wrapping
    )
    chain.mine_empty(3)
    await drain(poller(chain, sink))
    assert sink.of(GenerationFailed) == []
    found = _by_id(sink)
    children = [variation_key(rid(1), k) for k in (1, 2)]
    assert list(found) == [rid(1), *children, rid(2), rid(3), variation_key(rid(3), 1)]

    parent = found[rid(1)]
    assert (parent.variations, parent.parent_id, parent.variation, parent.seed) == (
        3,
        None,
        None,
        None,  # the generator derives it from the id: default_seed
    )
    base = default_seed(rid(1))
    for index, child_id in enumerate(children, 1):
        child = found[child_id]
        assert (child.parent_id, child.variation, child.variations) == (rid(1), index, None)
        assert child.seed == base + index
        assert (child.bpm, child.tags, child.requester) == (96, ("waltz",), parent.requester)
        assert child.chain is not None and parent.chain is not None
        assert child.chain.tx_hash == parent.chain.tx_hash
    assert found[rid(2)].parent_id is None and found[rid(2)].variations is None
    assert (found[rid(3)].seed, found[variation_key(rid(3), 1)].seed) == (2**32 - 1, 0)
    assert found[variation_key(rid(3), 1)].parent_id == rid(3)


async def test_variations_survive_a_reorg_rescan() -> None:
    # Re-mined after a reorg deeper than the confirmations, a request with variations keeps
    # its ids (neither revoked nor emitted twice); one first seen by the rescan is emitted
    # with its links, which come from the rescan's logs.
    chain, sink = VariationsChain(), MemorySink()
    first = chain.request(rid(1), 2)
    chain.mine(*first)
    chain.mine_empty(3)
    p = poller(chain, sink)
    await drain(p)
    chain.reorg(4)
    chain.mine_empty(1)
    chain.mine(*first, *chain.request(rid(2), 3, seed=7))
    chain.mine_empty(4)
    await drain(p)
    assert sink.of(GenerationRevoked) == []
    ids = sink.ids(GenerationRequest)
    assert len(ids) == len(set(ids)) == 5
    found = _by_id(sink)
    assert found[variation_key(rid(1), 1)].parent_id == rid(1)
    for index in (1, 2):
        child = found[variation_key(rid(2), index)]
        assert (child.parent_id, child.variation, child.seed) == (rid(2), index, 7 + index)
    assert found[rid(2)].variations == 3


async def test_a_vanished_request_with_variations_is_revoked_with_its_variations() -> None:
    chain, sink = VariationsChain(), MemorySink()
    chain.mine(*chain.request(rid(1), 3))
    chain.mine_empty(3)
    p = poller(chain, sink)
    await drain(p)
    chain.reorg(4)
    chain.mine_empty(5)
    await drain(p)
    revoked = sink.ids(GenerationRevoked)
    assert sorted(revoked) == sorted([rid(1), variation_key(rid(1), 1), variation_key(rid(1), 2)])
