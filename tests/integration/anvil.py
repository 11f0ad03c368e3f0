"""A private anvil per test, for tests that reorg, stop or restart the chain.

The shared anvil of `scripts/stack` serves tests that only send transactions; a test that
calls ``anvil_reorg`` or kills the node gets its own on a free loopback port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from acesteps.dev.localstack import StackSettings

__all__ = ["Anvil", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Anvil:
    """One anvil process; `stop` and `start` again keep the chain when ``state`` is set."""

    def __init__(
        self,
        log_dir: Path,
        state: Path | None = None,
        block_time: float | None = None,
        keep_states: int | None = None,
        mixed: bool = False,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.block_time = block_time
        # With a block time: mine each transaction at once too, not only every block_time.
        self.mixed = mixed
        # anvil keeps every block's state in memory and mining slows down as the chain
        # grows; keeping only the last N states makes long chains cheap (reorgs and state
        # reads stay possible within those N blocks).
        self.keep_states = keep_states
        self.log_path = log_dir / f"anvil-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Anvil:
        args = [str(StackSettings().anvil_bin), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--chain-id", "31337", "--silent"]
        if self.keep_states:
            args += ["--prune-history", str(self.keep_states)]
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
            if self.mixed:
                args += ["--mixed-mining"]
        if self.state is not None:
            args += ["--dump-state", str(self.state), "--state-interval", "1"]
            if self.state.exists():
                args += ["--load-state", str(self.state)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.rpc("eth_chainId")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"anvil did not start on {self.url}; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM lets anvil write --dump-state
            self.proc.wait(timeout=20)
            self.proc = None

    def rpc(self, method: str, *params: object) -> object:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        req = urllib.request.Request(self.url, body.encode(), {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]
