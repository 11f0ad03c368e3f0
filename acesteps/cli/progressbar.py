"""Progress of a request through its stages, drawn on a stream (a bar on a terminal)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "render_bar"]

STAGES = ("queued", "generating", "publishing", "completed")


def render_bar(status: str, reached: int, elapsed_s: float, width: int = 24) -> str:
    """``[############------------] 2/4 generating   12s``; ``reached`` indexes `STAGES`."""
    reached = max(0, min(reached, len(STAGES) - 1))
    filled = width * (reached + 1) // len(STAGES)
    bar = "#" * filled + "-" * (width - filled)
    return f"[{bar}] {reached + 1}/{len(STAGES)} {status:<10} {elapsed_s:4.0f}s"


class Progress:
    """The stages on a stream (stderr): one line redrawn in place on a terminal, otherwise a
    plain line per change."""

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: str = "",
    ) -> None:
        self.stream = stream
        self.label = f"{label} " if label else ""
        self.live = stream.isatty() if live is None else live
        self.clock = clock
        self.started = clock()
        self.status: str | None = None
        self.reached = 0
        self._drawn = False

    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, status: str) -> None:
        changed = status != self.status
        self.status = status
        if status in STAGES:
            self.reached = max(self.reached, STAGES.index(status))
        if self.live:
            self._draw()
        elif changed:
            self.stream.write(f"{self.label}[{self.elapsed():6.1f}s] {status}\n")
            self.stream.flush()

    def tick(self) -> None:
        if self.live and self.status is not None:
            self._draw()

    def note(self, message: str) -> None:
        """A message on a line of its own, the bar redrawn below it."""
        self.close()
        self.stream.write(message + "\n")
        self.tick()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    async def ticking(self, every_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.tick()

    def _draw(self) -> None:
        assert self.status is not None
        line = render_bar(self.status, self.reached, self.elapsed())
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()
        self._drawn = True
