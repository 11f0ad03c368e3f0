"""Whether a consume loop may still commit what it fetched: the zombie checks.

aiokafka 0.14 has no KIP-447: its TxnOffsetCommit carries no group generation, so the broker
accepts a transaction's offsets from a member that has already lost its partitions to
another member. Kafka fences a zombie only through its transactional id (a newer process
with the same id bumps the epoch: `acesteps.kafka.transactions`). A member frozen past its
session (SIGSTOP, a paused VM, a long blocking call) whose partitions went to a member with
*another* transactional id is not fenced by the broker at all; resumed with a batch in hand,
it would commit it, and the records would be handled twice.

`MemberGuard` is asked right before each commit whether the batch's member may have been
dropped since the batch was fetched:

- the batch is older than ``max_poll_interval_ms``: aiokafka has left the group meanwhile
  (a batch too big or a handler too slow for the setting);
- the event loop stood still for ``session_timeout_ms`` or longer meanwhile: heartbeats stop
  with it, so the coordinator may have dropped this member, even if no heartbeat has said so
  yet (right after SIGCONT, the commit may run before the heartbeat does);
- the consumer's group generation changed or was reset (a heartbeat or commit answered
  "unknown member" or "illegal generation": the group moved on without us).

A refused batch is not committed; its partitions rewind and the rebalance decides who handles
the records. What remains is a stall that begins after the check and before the commit
reaches the broker (milliseconds); closing it needs KIP-447 in the client.

Besides, after each assignment (`Gate.assignments`) a loop proves that its transactional id
is still its own before it handles anything (`TransactionalProducer.check_owner`): two live
processes with one instance id (a member replaced while frozen, then resumed) otherwise take
the partitions from each other in turn, as aiokafka's heartbeat cannot tell them apart, and
nothing stops the older one until it commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Final

from aiokafka import AIOKafkaConsumer

from acesteps.kafka.transactions import TransactionalProducer

__all__ = ["MemberGuard"]

log = logging.getLogger(__name__)

TICK_S: Final = 0.2
KEEP_S: Final = 3600.0  # stalls older than the longest batch are of no use


class MemberGuard:
    """Watches the event loop for stalls and the consumer's group generation."""

    def __init__(
        self, session_timeout_ms: int, max_poll_interval_ms: int, tick_s: float = TICK_S
    ) -> None:
        self.session_s = session_timeout_ms / 1000
        self.max_poll_s = max_poll_interval_ms / 1000
        self.tick_s = tick_s
        self._last = time.monotonic()
        self._stalls: deque[tuple[float, float]] = deque()  # (seen at, seconds still)
        self._task: asyncio.Task[None] | None = None
        self._owned_at = 0  # the assignment count at the last check of the transactional id

    # ------------------------------------------------------------------ the watch

    def start(self) -> None:
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._watch(), name="member-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.tick()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        still = now - self._last
        if still >= self.session_s / 4:
            self._stalls.append((now, still))
            log.warning("the event loop stood still for %.1f s", still)
        while self._stalls and self._stalls[0][0] < now - KEEP_S:
            self._stalls.popleft()
        self._last = now

    def stood_still(self, since: float, now: float | None = None) -> float:
        """The longest stall seen since ``since`` (monotonic), the current one included."""
        now = time.monotonic() if now is None else now
        seen = [still for at, still in self._stalls if at >= since]
        return max([now - self._last, *seen])

    # ------------------------------------------------------------------ the checks

    @staticmethod
    def generation(consumer: AIOKafkaConsumer) -> int | None:
        """The consumer's group generation (aiokafka has no public accessor), or None."""
        coordinator = getattr(consumer, "_coordinator", None)
        value = getattr(coordinator, "generation", None)
        return value if isinstance(value, int) else None

    def lost(self, consumer: AIOKafkaConsumer, since: float, generation: int | None) -> str | None:
        """Why a batch fetched at ``since`` in ``generation`` must not be committed, or None."""
        age = time.monotonic() - since
        if age >= self.max_poll_s:
            return (
                f"it was fetched {age:.1f} s ago, over max_poll_interval_ms "
                f"({self.max_poll_s:.0f} s): raise it or lower max_records"
            )
        still = self.stood_still(since)
        if still >= self.session_s:
            return (
                f"the process stood still for {still:.1f} s, at least the session timeout "
                f"({self.session_s:.0f} s): the group may have given its partitions away"
            )
        now = self.generation(consumer)
        if generation is not None and now != generation:
            return f"the group generation moved from {generation} to {now}"
        return None

    async def check_owner(
        self,
        consumer: AIOKafkaConsumer,
        assignments: int,
        txn: TransactionalProducer,
        group_id: str,
    ) -> None:
        """After a new assignment (``assignments``: `Gate.assignments`), prove that the
        transactional id is still this process's own; a fenced one raises (module docstring)."""
        if assignments == self._owned_at:
            return
        assigned = sorted(consumer.assignment())
        if assigned:
            tp = assigned[0]
            await txn.check_owner({tp: await consumer.position(tp)}, group_id)
        self._owned_at = assignments
