"""Capped exponential back-off: the one retry schedule of every service.

The consume loop (`acesteps.kafka.loop`), the chain listener's RPC reads and its Kafka
writes all wait `Backoff.delay` between attempts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off, capped: ``initial_s * factor ** (attempt - 1)``, at most ``max_s``.

    ``jitter`` (0..1) takes up to that fraction off each delay, so instances that failed
    together (a shared dependency went down) do not retry in lockstep; it never exceeds the
    cap.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid back-off {self}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = float(self.initial_s)
        # Multiply step by step rather than factor ** n: no float overflow at any attempt.
        for _ in range(max(0, attempt - 1)):
            delay *= self.factor
            if delay >= self.max_s:
                break
        delay = min(delay, self.max_s)
        return delay * (1 - self.jitter * rand()) if self.jitter else delay
