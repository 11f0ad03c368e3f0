"""The local stack from ``acesteps up`` / ``acesteps down``, in a checkout of this repository.

``up`` starts the stack (``scripts/stack up``: Kafka, Kubo, anvil on 127.0.0.1) when Kafka is
not reachable, and leaves a marker so that ``down`` stops only a stack that ``up`` started:
a stack someone started by hand (or ``scripts/run``, or the tests) stays up. The stack's
addresses are in ``.cache/run/stack.env``; settings read it as an env file, under the
process's own environment, which wins.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values
from pydantic_settings import BaseSettings, SettingsConfigDict

from acesteps.dev import CHECKOUT
from acesteps.settings import CACHE_DIR, CommonSettings

__all__ = ["ENV_FILE", "StackSettings", "child_env", "start_if_needed", "stop_if_started"]

SCRIPT = CHECKOUT / "scripts" / "stack"
ENV_FILE = CACHE_DIR / "run" / "stack.env"
MARKER = CACHE_DIR / "run" / "stack.started-by-up"


class StackSettings(BaseSettings):
    """Where ``scripts/stack`` put its tools and logs (development and tests only)."""

    model_config = SettingsConfigDict(env_prefix="ACESTEPS_STACK_", extra="ignore", frozen=True)

    log_dir: Path = CACHE_DIR / "run" / "logs"
    ipfs_bin: Path = CACHE_DIR / "bin" / "ipfs"
    anvil_bin: Path = CACHE_DIR / "node" / "node_modules" / ".bin" / "anvil"
    node_modules: Path = CACHE_DIR / "node" / "node_modules"


def _reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def start_if_needed() -> bool:
    """Start the stack unless Kafka answers (or this is no checkout); whether it started it."""
    if not SCRIPT.exists() or _reachable(CommonSettings(_env_file=ENV_FILE).kafka_bootstrap):
        return False
    subprocess.run([str(SCRIPT), "up"], check=True, stdout=sys.stderr)
    MARKER.write_text("scripts/stack up was run by acesteps up\n")
    return True


def stop_if_started() -> bool:
    """``scripts/stack down`` if ``start_if_needed`` started the stack; whether it did."""
    if not MARKER.exists():
        return False
    subprocess.run([str(SCRIPT), "down"], check=True, stdout=sys.stderr)
    MARKER.unlink()
    return True


def child_env(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` plus the stack's addresses it does not set itself."""
    stack = dotenv_values(ENV_FILE) if ENV_FILE.exists() else {}
    return {**{k: v for k, v in stack.items() if v is not None}, **environ}
