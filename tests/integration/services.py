"""A service (``python -m MODULE``) as a real subprocess, for crash and restart tests.

Its settings travel in the environment, as in production; its output goes to a log file
under ``StackSettings().log_dir`` that the test can read (`tail`, `mentions`) and that the
failure report of `tests/conftest.py` attaches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

__all__ = ["ServiceProcess"]

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """``python -m module`` with ``env`` added to this process's environment."""

    def __init__(self, module: str, env: Mapping[str, str], log: Path) -> None:
        self.module = module
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill9(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or committed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """SIGTERM (the service finishes its batch and closes), then SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def signal(self, sig: signal.Signals) -> None:
        """SIGSTOP freezes the process (a paused VM, a long GC), SIGCONT resumes it."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """Its exit status, once it has exited by itself."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def mentions(self, words: str) -> bool:
        return words in self.text()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])
