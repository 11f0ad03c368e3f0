"""The log poller: confirmed ``GenerationRequested`` and ``RequestCanceled`` logs -> records,
exactly once.

Each `LogPoller.step` scans the next bounded range of confirmed blocks and hands the
records and the new checkpoint to a `Sink`, which writes them in one Kafka transaction
(``PREFIX.requests.v1``, ``PREFIX.failures.v1``, ``PREFIX.cancels.v1``,
``PREFIX.listener.checkpoints``). A block is
confirmed when ``confirmations`` blocks follow it on the chosen head (``latest``, ``safe`` or
``finalized``).

Reorgs are detected by hash, as Chainlink's log poller does: the block after the checkpoint
must name the checkpoint's hash as its parent, before the range is read and again after (so
a reorg that lands between the reads is not missed). A reorg shallower than the
confirmation depth never reaches a processed block, so it produces nothing. A deeper one
breaks that link: the poller walks its recent block hashes back to the newest block still on
the chain (the common ancestor), rescans from there, emits requests that are new, keeps
those that survived (no duplicates), and emits a `GenerationRevoked` for each request whose
log vanished. Request ids do not depend on block order (the contract derives them from the
requester and what it sent), so a request re-included in another block keeps its id and
is neither revoked nor emitted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from acesteps.messages import (
    CancelRequested,
    GenerationFailed,
    GenerationRequest,
    GenerationRevoked,
    ListenerCheckpoint,
    RecentBlock,
)
from listener.chainreader import ChainReader, Header, RangeTooLarge, RawLog
from listener.events import (
    from_log,
    is_cancel,
    is_options,
    is_variation,
    options_of,
    request_id_of,
    variations_of,
)

__all__ = ["ChainMoved", "LogPoller", "PollerConfig", "Record", "Sink"]

log = logging.getLogger(__name__)


Record = GenerationRequest | GenerationRevoked | GenerationFailed | CancelRequested
"""What the listener writes: requests and revocations, failures for logs it cannot use, and
the cancels of requests canceled on chain."""


class Sink(Protocol):
    async def commit(self, records: Sequence[Record], checkpoint: ListenerCheckpoint) -> None:
        """Write the records and the checkpoint atomically."""


class ChainMoved(Exception):
    """The chain changed while a range was being read; the step is retried."""


@dataclass(frozen=True)
class PollerConfig:
    chain_id: int
    contract: str
    confirmations: int = 3
    block_tag: str = "latest"
    max_range: int = 2000
    history_blocks: int = 256


class LogPoller:
    def __init__(
        self, reader: ChainReader, sink: Sink, config: PollerConfig, checkpoint: ListenerCheckpoint
    ) -> None:
        self._reader = reader
        self._sink = sink
        self._config = config
        self._range = config.max_range
        self.checkpoint = checkpoint

    async def confirmed_head(self) -> int:
        head = await self._reader.head(self._config.block_tag)
        return head - self._config.confirmations

    async def step(self) -> int:
        """Process the next range of confirmed blocks; returns how many blocks were done."""
        cp = self.checkpoint
        target = await self.confirmed_head()
        if target <= cp.block_number:
            return 0
        # 1. Is the checkpoint still on the chain? Its successor must point at it.
        successor = await self._reader.header(cp.block_number + 1)
        if successor.parent_hash != cp.block_hash:
            return await self._recover_from_reorg(target)
        # 2. Read the next range and turn its logs into records.
        end = min(target, cp.block_number + self._range)
        logs, end_header, headers = await self._read_range(cp.block_number + 1, end)
        records = self._records(logs)
        # 3. Still the chain the range was read from? A reorg between step 1 and the reads
        #    would otherwise go unseen: the next step checks the link from the new checkpoint.
        await self._still_linked(cp.block_number, cp.block_hash)
        # 4. Hand records and checkpoint over together.
        new_cp = self._advance(cp, end_header, headers, logs, drop_after=None)
        await self._sink.commit(records, new_cp)
        self.checkpoint = new_cp
        self._range = min(self._range * 2, self._config.max_range)  # grow back after halving
        return end - cp.block_number

    # ------------------------------------------------------------------ reading

    async def _still_linked(self, number: int, block_hash: str) -> None:
        """Raise `ChainMoved` unless block ``number + 1`` still names ``block_hash`` as its
        parent (block ``number`` is the last one processed, or the common ancestor)."""
        successor = await self._reader.header(number + 1)
        if successor.parent_hash != block_hash:
            raise ChainMoved(f"block {number} was reorged out while the range was read")

    async def _read_range(
        self, start: int, end: int
    ) -> tuple[list[RawLog], Header, dict[int, Header]]:
        """Logs of [start, end'] (end' <= end after halving), checked against the chain."""
        while True:
            end = min(end, start + self._range - 1)
            before = await self._reader.header(end)
            try:
                logs = await self._reader.logs(start, end)
            except RangeTooLarge as exc:
                if self._range == 1:
                    raise
                self._range = max(1, self._range // 2)
                log.info(
                    "node refused %d blocks (%s); trying %d", end - start + 1, exc, self._range
                )
                continue
            after = await self._reader.header(end)
            if after.hash != before.hash:
                raise ChainMoved(f"block {end} changed while its logs were read")
            headers = {end: after}
            # Every log must come from the block that is canonical now.
            for item in logs:
                if item.block_number not in headers:
                    headers[item.block_number] = await self._reader.header(item.block_number)
                if headers[item.block_number].hash != item.block_hash:
                    raise ChainMoved(f"log in block {item.block_number} is from an orphaned block")
            logs.sort(key=lambda x: (x.block_number, x.log_index))
            return logs, after, headers

    def _records(self, logs: list[RawLog], read: list[RawLog] | None = None) -> list[Record]:
        """The records of ``logs``, with request options and variation links found among
        ``read`` (all the logs read with them; default ``logs``)."""
        context = read if read is not None else logs
        options, variations = options_of(context), variations_of(context)
        records: list[Record] = []
        for item in logs:
            if is_options(item) or is_variation(item):
                continue  # read with its request
            record = from_log(item, self._config.chain_id, options, variations)
            if record is None:
                log.error("log %s/%d carries no request id; skipped", item.tx_hash, item.log_index)
                continue
            records.append(record)
        return records

    # ------------------------------------------------------------------ checkpoints

    def _advance(
        self,
        cp: ListenerCheckpoint,
        end: Header,
        headers: dict[int, Header],
        logs: list[RawLog],
        drop_after: int | None,
    ) -> ListenerCheckpoint:
        """The checkpoint after ``end``, remembering hashes and request ids of recent blocks."""
        ids: dict[int, list[str]] = {}
        for item in logs:
            rid = request_id_of(item)
            if rid is not None:
                ids.setdefault(item.block_number, []).append(rid)
        kept = [b for b in cp.recent if drop_after is None or b.number <= drop_after]
        if all(b.number != cp.block_number for b in kept):
            kept.append(RecentBlock(number=cp.block_number, hash=cp.block_hash))
        new = [
            RecentBlock(number=n, hash=headers[n].hash, request_ids=tuple(ids.get(n, ())))
            for n in sorted(set(ids) | {end.number})
        ]
        floor = end.number - self._config.history_blocks
        recent = tuple(b for b in [*kept, *new] if b.number >= floor)
        return ListenerCheckpoint(
            chain_id=cp.chain_id,
            contract=cp.contract,
            block_number=end.number,
            block_hash=end.hash,
            recent=recent,
        )

    # ------------------------------------------------------------------ reorgs

    async def _common_ancestor(self) -> RecentBlock:
        recent = self.checkpoint.recent
        for block in reversed(recent):
            if (await self._reader.header(block.number)).hash == block.hash:
                return block
        # Deeper than the history we keep: assume the oldest remembered block's parent held.
        oldest = recent[0].number - 1 if recent else self.checkpoint.block_number - 1
        oldest = max(oldest, 0)
        log.error(
            "reorg deeper than %d blocks; rescanning from block %d",
            self._config.history_blocks,
            oldest,
        )
        header = await self._reader.header(oldest)
        return RecentBlock(number=header.number, hash=header.hash)

    async def _recover_from_reorg(self, target: int) -> int:
        cp = self.checkpoint
        ancestor = await self._common_ancestor()
        suspects = {
            rid: block
            for block in cp.recent
            if block.number > ancestor.number
            for rid in block.request_ids
        }
        log.warning(
            "reorg below checkpoint %d: common ancestor %d, %d request(s) to re-check",
            cp.block_number,
            ancestor.number,
            len(suspects),
        )
        # Rescan everything from the ancestor to past the old checkpoint, so that a request
        # re-mined a little later is found rather than revoked.
        end = min(target, cp.block_number + self._config.max_range)
        logs: list[RawLog] = []
        headers: dict[int, Header] = {}
        start = ancestor.number + 1
        while start <= end:
            part, part_end, part_headers = await self._read_range(start, end)
            logs += part
            headers.update(part_headers)
            start = part_end.number + 1
        end_header = headers[end]
        await self._still_linked(ancestor.number, ancestor.hash)
        pairs = [(item, request_id_of(item)) for item in logs]
        # Requests not emitted before, and every cancel of the range again: one emitted
        # before the reorg repeats harmlessly (a cancel is idempotent; the topic is
        # compacted), one that vanished is not withdrawn (the workers may have stopped the
        # request already; the requester can still cancel or reclaim it on chain).
        fresh = [
            item
            for item, rid in pairs
            if (rid is not None and rid not in suspects) or (rid is None and is_cancel(item))
        ]
        survived = {rid for _, rid in pairs}
        records = self._records(fresh, logs)
        for rid, block in suspects.items():
            if rid not in survived:
                records.append(
                    GenerationRevoked(
                        request_id=rid,
                        reason=f"its log vanished in a reorg (common ancestor {ancestor.number})",
                        chain_id=cp.chain_id,
                        contract=cp.contract,
                        block_number=block.number,
                        block_hash=block.hash,
                    )
                )
        base = cp.model_copy(update={"block_number": ancestor.number, "block_hash": ancestor.hash})
        new_cp = self._advance(base, end_header, headers, logs, drop_after=ancestor.number)
        await self._sink.commit(records, new_cp)
        self.checkpoint = new_cp
        return end - cp.block_number
