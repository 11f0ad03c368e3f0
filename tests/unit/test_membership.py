"""MemberGuard: when a consume loop must not commit what it fetched (stalls, generations)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from acesteps.kafka.membership import MemberGuard


def consumer(generation: int | None) -> Any:
    return SimpleNamespace(_coordinator=SimpleNamespace(generation=generation))


def test_a_stall_of_a_session_timeout_after_the_fetch_forbids_the_commit() -> None:
    guard = MemberGuard(session_timeout_ms=10_000, max_poll_interval_ms=300_000)
    guard._last = 100.0
    for now in (100.2, 100.4, 100.6):
        guard.tick(now)
    guard.tick(112.0)  # 11.4 s without a tick: a SIGSTOP, a paused VM
    assert guard.stood_still(since=100.5, now=112.1) >= 11.4
    assert guard.stood_still(since=112.05, now=112.1) < 1  # a batch fetched after it is fine
    assert guard.stood_still(since=90.0, now=112.1) >= 11.4


def test_the_current_stall_counts_before_the_watch_has_ticked_again() -> None:
    guard = MemberGuard(session_timeout_ms=10_000, max_poll_interval_ms=300_000)
    guard._last = 100.0
    # Right after SIGCONT the commit may run before the watch task: now - last tells.
    assert guard.stood_still(since=99.0, now=115.0) == 15.0
    assert guard.stood_still(since=99.0, now=100.1) < 1


def test_lost_names_the_reason(monkeypatch: Any) -> None:
    guard = MemberGuard(session_timeout_ms=6_000, max_poll_interval_ms=300_000)
    clock = [200.0]
    monkeypatch.setattr("acesteps.kafka.membership.time.monotonic", lambda: clock[0])
    guard._last = 200.0
    assert guard.lost(consumer(4), since=199.0, generation=4) is None
    # The group moved on (a heartbeat answered "unknown member": generation reset to -1).
    assert "generation moved from 4 to -1" in (guard.lost(consumer(-1), 199.0, 4) or "")
    # The process stood still for the session timeout.
    clock[0] = 207.0
    reason = guard.lost(consumer(4), since=199.0, generation=4) or ""
    assert "stood still for 7.0 s" in reason
    # A batch older than max_poll_interval_ms: aiokafka has left the group meanwhile.
    clock[0] = 520.0
    guard._last = 520.0
    assert "over max_poll_interval_ms" in (guard.lost(consumer(4), since=199.0, generation=4) or "")
    clock[0] = 207.0
    # Without a readable generation, only the stall is checked.
    guard._last = 207.0
    assert guard.lost(SimpleNamespace(), since=199.0, generation=None) is None


def test_old_stalls_are_forgotten() -> None:
    guard = MemberGuard(session_timeout_ms=10_000, max_poll_interval_ms=300_000)
    guard._last = 0.0
    guard.tick(20.0)
    guard.tick(20.0 + 3601)
    assert guard.stood_still(since=0.0, now=3621.1) > 3000  # the last gap itself
    guard.tick(3621.2)
    assert all(at > 3621.2 - 3600 for at, _ in guard._stalls)
