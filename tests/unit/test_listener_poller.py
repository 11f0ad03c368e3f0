"""The log poller against an in-memory chain: confirmations, ranges, reorgs, bad events."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from eth_abi.abi import encode as abi_encode

from acesteps.messages import (
    CancelRequested,
    GenerationFailed,
    GenerationRequest,
    GenerationRevoked,
    ListenerCheckpoint,
    Message,
)
from acesteps.registry import event_topic
from listener.chainreader import Header, RangeTooLarge, RawLog
from listener.poller import ChainMoved, LogPoller, PollerConfig

CONTRACT = "0x" + "11" * 20
REQUESTER_TOPIC = "0x" + "00" * 12 + "22" * 20
TOPIC0 = event_topic("GenerationRequested")
CANCELED = event_topic("RequestCanceled")


def h(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


def rid(n: int) -> str:
    return h("request", n)


def payload(prompt: str | bytes = "a calm piano piece", duration: int = 30) -> bytes:
    raw = prompt.encode() if isinstance(prompt, str) else prompt
    return abi_encode(["bytes", "bytes", "uint32"], [raw, b"", duration])


@dataclass
class Block:
    number: int
    hash: str
    parent: str
    logs: list[tuple[str, bytes] | tuple[str, bytes, str]] = field(default_factory=list)
    """(request id, event data[, topic0: GenerationRequested unless given])"""


class FakeChain:
    """A chain whose blocks carry (request id, event data) logs; can reorg."""

    def __init__(self, max_logs_range: int | None = None) -> None:
        self.blocks = [Block(0, h("genesis"), "0x" + "00" * 32)]
        self.max_logs_range = max_logs_range
        self.ranges: list[tuple[int, int]] = []
        self.fork = 0
        # Called once with the block number of the next header read, after its answer is
        # taken: the chain can change between that read and the next (a slow RPC answer).
        self.after_header: Callable[[int], None] | None = None

    def mine(self, *logs: tuple[str, bytes] | tuple[str, bytes, str]) -> Block:
        parent = self.blocks[-1]
        block = Block(parent.number + 1, h(parent.hash, self.fork), parent.hash, list(logs))
        self.blocks.append(block)
        return block

    def mine_empty(self, count: int) -> None:
        for _ in range(count):
            self.mine()

    def reorg(self, depth: int) -> None:
        """Drop the last ``depth`` blocks; mine() afterwards builds the new branch."""
        self.fork += 1
        del self.blocks[-depth:]

    async def head(self, tag: str) -> int:
        return self.blocks[-1].number

    async def header(self, number: int) -> Header:
        b = self.blocks[number]
        answer = Header(b.number, b.hash, b.parent)
        hook, self.after_header = self.after_header, None
        if hook is not None:
            hook(number)
        return answer

    async def logs(self, start: int, end: int) -> list[RawLog]:
        if self.max_logs_range and end - start + 1 > self.max_logs_range:
            raise RangeTooLarge("query exceeds max block range")
        self.ranges.append((start, end))
        return [
            RawLog(
                CONTRACT,
                b.number,
                b.hash,
                h("tx", b.hash, i),
                i,
                (log[2] if len(log) == 3 else TOPIC0, log[0], REQUESTER_TOPIC),
                log[1],
            )
            for b in self.blocks[start : end + 1]
            for i, log in enumerate(b.logs)
        ]


class MemorySink:
    def __init__(self) -> None:
        self.records: list[Message] = []
        self.checkpoints: list[ListenerCheckpoint] = []

    async def commit(self, records: Sequence[Message], checkpoint: ListenerCheckpoint) -> None:
        self.records += records
        self.checkpoints.append(checkpoint)

    def of(self, kind: type[Message]) -> list[Message]:
        return [r for r in self.records if isinstance(r, kind)]

    def ids(self, kind: type[Message]) -> list[str]:
        return [r.request_id for r in self.of(kind)]  # type: ignore[attr-defined]


def genesis_checkpoint(chain: FakeChain) -> ListenerCheckpoint:
    g = chain.blocks[0]
    return ListenerCheckpoint(chain_id=31337, contract=CONTRACT, block_number=0, block_hash=g.hash)


def poller(
    chain: FakeChain, sink: MemorySink, cp: ListenerCheckpoint | None = None, **cfg
) -> LogPoller:  # type: ignore[no-untyped-def]
    config = PollerConfig(chain_id=31337, contract=CONTRACT, **{"confirmations": 3, **cfg})
    return LogPoller(chain, sink, config, cp or genesis_checkpoint(chain))


async def drain(p: LogPoller) -> None:
    while await p.step():
        pass


async def test_backfill_emits_confirmed_requests_once_in_order() -> None:
    chain, sink = FakeChain(), MemorySink()
    for n in range(40):
        chain.mine((rid(n), payload()))
        chain.mine_empty(n % 3)
    p = poller(chain, sink, max_range=10)
    await drain(p)
    head = chain.blocks[-1].number
    confirmed = [rid(n) for n in range(40) if _block_of(chain, rid(n)) <= head - 3]
    assert sink.ids(GenerationRequest) == confirmed
    assert p.checkpoint.block_number == head - 3
    assert p.checkpoint.block_hash == chain.blocks[head - 3].hash
    # Nothing more until new blocks confirm what is left.
    assert await p.step() == 0
    chain.mine_empty(3)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(n) for n in range(40)]


def _block_of(chain: FakeChain, request_id: str) -> int:
    return next(b.number for b in chain.blocks if any(log[0] == request_id for log in b.logs))


async def test_range_is_halved_when_the_node_refuses_it() -> None:
    chain, sink = FakeChain(max_logs_range=7), MemorySink()
    for n in range(30):
        chain.mine((rid(n), payload()))
    chain.mine_empty(3)
    await drain(poller(chain, sink, max_range=100))
    assert sink.ids(GenerationRequest) == [rid(n) for n in range(30)]
    assert max(end - start + 1 for start, end in chain.ranges) <= 7


async def test_reorg_shallower_than_confirmations_emits_nothing_orphaned() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine_empty(5)
    p = poller(chain, sink)
    await drain(p)
    chain.mine((rid(1), payload()))  # seen at depth 0, never confirmed
    chain.mine_empty(1)
    await drain(p)
    chain.reorg(2)
    chain.mine((rid(2), payload()))
    chain.mine_empty(3)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(2)]
    assert sink.of(GenerationRevoked) == []


async def test_reorg_deeper_than_confirmations_revokes_vanished_requests() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(0), payload()))
    chain.mine_empty(2)
    chain.mine((rid(1), payload()), (rid(2), payload()))  # block 4
    chain.mine_empty(5)
    p = poller(chain, sink)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(0), rid(1), rid(2)]
    # Replace block 4 onwards: rid(1) is re-mined later, rid(2) vanishes, rid(3) is new.
    chain.reorg(6)
    chain.mine_empty(1)
    chain.mine((rid(3), payload()), (rid(1), payload()))
    chain.mine_empty(6)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(0), rid(1), rid(2), rid(3)]
    (revoked,) = sink.of(GenerationRevoked)
    assert revoked.request_id == rid(2)  # type: ignore[attr-defined]
    assert revoked.block_number == 4  # type: ignore[attr-defined]
    assert p.checkpoint.block_hash == chain.blocks[p.checkpoint.block_number].hash


async def test_a_reorg_between_the_link_check_and_the_range_read_is_not_missed() -> None:
    # The answer that says "the checkpoint's block is still the parent of the next one" is
    # already stale when it arrives: a reorg replaced both meanwhile. The range is then read
    # from the new chain, whose blocks agree with each other; only a second look at the link
    # finds out that the checkpoint, and the request in it, are gone.
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(1), payload()))  # block 1
    chain.mine_empty(3)  # 2..4: block 1 confirmed
    p = poller(chain, sink)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(1)] and p.checkpoint.block_number == 1
    chain.mine_empty(1)  # block 5: block 2 confirmed, the next step reads it

    def reorg(number: int) -> None:
        assert number == 2  # the successor of the checkpoint: the link check
        chain.reorg(5)  # blocks 1..5 replaced: rid(1) vanishes
        chain.mine_empty(8)

    chain.after_header = reorg
    with pytest.raises(ChainMoved):  # the service's loop retries the step
        await p.step()
    await drain(p)
    assert [r.request_id for r in sink.of(GenerationRevoked)] == [rid(1)]  # type: ignore[attr-defined]
    assert sink.ids(GenerationRequest) == [rid(1)]  # emitted once, before the reorg
    assert p.checkpoint.block_hash == chain.blocks[p.checkpoint.block_number].hash


async def test_reorg_is_detected_after_a_restart_from_the_checkpoint() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine_empty(3)
    chain.mine((rid(7), payload()))
    chain.mine_empty(6)
    await drain(poller(chain, sink))
    saved = sink.checkpoints[-1]
    chain.reorg(7)
    chain.mine_empty(8)
    restarted, sink2 = None, MemorySink()
    restarted = poller(
        chain, sink2, cp=ListenerCheckpoint.model_validate_json(saved.model_dump_json())
    )
    await drain(restarted)
    assert sink2.ids(GenerationRevoked) == [rid(7)]
    assert sink2.of(GenerationRequest) == []


async def test_restart_resumes_without_duplicates() -> None:
    chain, sink = FakeChain(), MemorySink()
    for n in range(12):
        chain.mine((rid(n), payload()))
    chain.mine_empty(3)
    first = poller(chain, sink, max_range=4)
    await first.step()
    await first.step()
    second = poller(chain, sink, cp=sink.checkpoints[-1], max_range=4)
    await drain(second)
    assert sink.ids(GenerationRequest) == [rid(n) for n in range(12)]


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (payload(b"\xff\xfe broken"), "invalid_utf8", "prompt is not valid UTF-8"),
        (payload(duration=300), "invalid_request", "durationSeconds"),
        (payload(duration=4), "invalid_request", "durationSeconds"),
        (payload(""), "invalid_request", "prompt"),
        (payload("x" * 1001), "invalid_request", "prompt"),
        (b"\x01\x02garbage", "undecodable_event", "event data"),
    ],
)
async def test_bad_events_become_failures(data: bytes, code: str, words: str) -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(1), data), (rid(2), payload()))
    chain.mine_empty(3)
    await drain(poller(chain, sink))
    (failed,) = sink.of(GenerationFailed)
    assert failed.code == code  # type: ignore[attr-defined]
    assert words in failed.message  # type: ignore[attr-defined]
    assert failed.request_id == rid(1)  # type: ignore[attr-defined]
    assert failed.chain is not None and failed.chain.block_number == 1  # type: ignore[attr-defined]
    assert sink.ids(GenerationRequest) == [rid(2)]


async def test_maximum_size_prompt_is_accepted() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(1), payload("é" * 500)))  # 1000 bytes of UTF-8
    chain.mine_empty(3)
    await drain(poller(chain, sink))
    (req,) = sink.of(GenerationRequest)
    assert req.prompt == "é" * 500  # type: ignore[attr-defined]


async def test_chain_moving_during_a_read_commits_nothing() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(1), payload()))
    chain.mine_empty(4)

    class Shifting(FakeChain):
        async def logs(self, start: int, end: int) -> list[RawLog]:
            out = await chain.logs(start, end)
            chain.reorg(2)
            chain.mine_empty(2)
            return out

    shifting = Shifting()
    shifting.blocks = chain.blocks
    p = LogPoller(
        shifting, sink, PollerConfig(31337, CONTRACT, confirmations=0), genesis_checkpoint(chain)
    )
    with pytest.raises(ChainMoved):
        await p.step()
    assert sink.records == [] and sink.checkpoints == []


def cancel_log(n: int, reclaimed: bool = False) -> tuple[str, bytes, str]:
    return (rid(n), abi_encode(["uint256", "bool"], [10**15, reclaimed]), CANCELED)


async def test_a_request_canceled_on_chain_becomes_a_cancel_once_confirmed() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(0), payload()), (rid(1), payload()))
    chain.mine(cancel_log(0), cancel_log(1, reclaimed=True))
    chain.mine_empty(2)
    p = poller(chain, sink)
    await drain(p)
    assert sink.of(CancelRequested) == []  # two blocks deep: not confirmed yet
    chain.mine_empty(1)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(0), rid(1)]
    cancels = sink.of(CancelRequested)
    assert [c.request_id for c in cancels] == [rid(0), rid(1)]  # type: ignore[attr-defined]
    assert {(c.reason, c.by.lower()) for c in cancels} == {("chain", "0x" + "22" * 20)}  # type: ignore[attr-defined]
    assert all(c.tx_hash for c in cancels)  # type: ignore[attr-defined]
    # Cancels are not requests: the checkpoint remembers only requests, for revocations.
    assert all(b.request_ids in ((), (rid(0), rid(1))) for b in p.checkpoint.recent)


async def test_a_deep_reorg_emits_the_cancels_of_the_new_branch_and_revokes_no_cancel() -> None:
    chain, sink = FakeChain(), MemorySink()
    chain.mine((rid(0), payload()))
    chain.mine(cancel_log(0))  # block 2
    chain.mine_empty(5)
    p = poller(chain, sink)
    await drain(p)
    assert sink.ids(CancelRequested) == [rid(0)]
    chain.reorg(6)  # from block 2: the cancel is dropped, then mined again later
    chain.mine_empty(1)
    chain.mine(cancel_log(0))
    chain.mine_empty(5)
    await drain(p)
    assert sink.ids(GenerationRequest) == [rid(0)]
    assert sink.ids(CancelRequested) == [rid(0), rid(0)]  # again: harmless, compacted
    assert sink.of(GenerationRevoked) == []
