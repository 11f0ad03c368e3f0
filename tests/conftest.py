"""Shared fixtures.

Tests under ``tests/unit`` are marked ``unit`` and use no network. Tests under
``tests/integration`` are marked ``integration`` and talk to the real Kafka, Kubo and anvil
started by ``scripts/stack up`` (``scripts/test`` does this); when the stack is not up they
fail with a message that says so, they are never skipped. ``gpu`` tests are skipped without
CUDA. When an integration test fails, the tail of every stack log is attached to its report.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from acesteps.dev.localstack import StackSettings
from acesteps.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts[0] in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, parts[0]))
        if item.get_closest_marker("gpu") and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and item.get_closest_marker("integration"):
        for log in sorted(StackSettings().log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            report.sections.append((f"stack log {log.name} (last 40 lines)", "\n".join(tail)))
    return report


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack() -> CommonSettings:
    """The settings of the running local stack; fails loudly when a component is down."""
    settings = CommonSettings()
    endpoints = {
        "Kafka": settings.kafka_bootstrap.split(",")[0],
        "Kubo": urlsplit(settings.ipfs_api_url).netloc,
        "anvil": urlsplit(settings.rpc_url).netloc,
    }
    down = [f"{name} at {ep}" for name, ep in endpoints.items() if not _reachable(ep)]
    if down:
        pytest.fail(
            "the local stack is not running (" + ", ".join(down) + "): "
            "run `scripts/stack up` and `source .cache/run/stack.env`, or use `scripts/test`",
            pytrace=False,
        )
    return settings


@pytest.fixture
def settings(stack: CommonSettings) -> Iterator[CommonSettings]:
    """Stack settings with topics of this test's own (a fresh prefix)."""
    yield stack.with_overrides(topic_prefix=f"t{uuid.uuid4().hex[:12]}")
