"""Progress of a request through its stages, drawn on a stream (a bar on a terminal)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "render_bar"]

STAGES = ("queued", "generating", "publishing", "completed")


def render_bar(
    status: str,
    reached: int,
    elapsed_s: float,
    width: int = 24,
    percent: float | None = None,
    eta_s: float | None = None,
) -> str:
    """``[############------------] 2/4 generating   12s``; ``reached`` indexes `STAGES`.
    While generating with the model's ``percent`` of steps done, the generating stage's share
    of the bar fills with it: ``... 2/4 generating  62% ~3s left   12s``."""
    reached = max(0, min(reached, len(STAGES) - 1))
    share = width / len(STAGES)
    done: float = reached + 1
    extra = ""
    if status == "generating" and percent is not None:
        done = reached + min(max(percent, 0.0), 100.0) / 100
        extra = f" {percent:3.0f}%" + (f" ~{eta_s:.0f}s left" if eta_s is not None else "")
    filled = min(width, int(share * done))
    bar = "#" * filled + "-" * (width - filled)
    return f"[{bar}] {reached + 1}/{len(STAGES)} {status:<10}{extra} {elapsed_s:4.0f}s"


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
        self.percent: float | None = None
        self.eta_s: float | None = None
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

    def steps(self, percent: object, eta_s: object) -> None:
        """The model's progress while generating (drawn on a terminal only)."""
        self.percent = float(percent) if isinstance(percent, int | float) else None
        self.eta_s = float(eta_s) if isinstance(eta_s, int | float) else None
        if self.live and self.status is not None:
            self._draw()

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
        line = render_bar(
            self.status, self.reached, self.elapsed(), percent=self.percent, eta_s=self.eta_s
        )
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()
        self._drawn = True
