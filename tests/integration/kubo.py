"""A private Kubo per test, for tests that stop and restart the IPFS node.

The shared Kubo of `scripts/stack` serves every other test; stopping it would break tests
running beside this one. This one is set up as the stack's is (``init --profile=test``,
loopback API and gateway on free ports, no swarm, no bootstrap peers, ``daemon --offline``);
`stop` then `start` again keeps its repository, so what it pinned stays pinned.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from acesteps.dev.localstack import StackSettings
from tests.integration.anvil import free_port

__all__ = ["Kubo"]


class Kubo:
    """One ``ipfs daemon --offline`` on its own repository and ports."""

    def __init__(self, repo: Path, log_dir: Path) -> None:
        self.repo = repo
        self.api_port = free_port()
        self.gateway_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.log_path = log_dir / f"kubo-{self.api_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._env = {**os.environ, "IPFS_PATH": str(repo)}

    def _ipfs(self, *args: str) -> None:
        with self.log_path.open("ab") as log:
            subprocess.run(
                [str(StackSettings().ipfs_bin), *args],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=60,
            )

    def _init(self) -> None:
        self._ipfs("init", "--profile=test")
        self._ipfs("config", "Addresses.API", f"/ip4/127.0.0.1/tcp/{self.api_port}")
        self._ipfs("config", "Addresses.Gateway", f"/ip4/127.0.0.1/tcp/{self.gateway_port}")
        self._ipfs("config", "--json", "Addresses.Swarm", "[]")
        self._ipfs("config", "--json", "Bootstrap", "[]")

    def start(self, timeout_s: float = 60) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.repo / "config").exists():
            self._init()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(StackSettings().ipfs_bin), "daemon", "--offline"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Kubo did not start on {self.api_url}; see {self.log_path}")

    def ready(self) -> bool:
        request = urllib.request.Request(f"{self.api_url}/api/v0/version", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """SIGTERM (Kubo closes its repository cleanly), SIGKILL after 30 s."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
