"""Fixtures of the integration tests that talk to a private chain or the listener, and the
headless browser (`tests.integration.browser`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from acesteps.dev.localstack import StackSettings
from acesteps.kafka.admin import ensure_topics
from acesteps.settings import CommonSettings
from tests.integration.anvil import Anvil
from tests.integration.browser import browser
from tests.integration.listening import ListenerProcess

__all__ = ["anvil", "browser", "listeners", "topics"]


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    """A private anvil, instant mining: blocks come when a test sends or mines (``anvil_mine``)."""
    node = Anvil(StackSettings().log_dir, state=tmp_path / "anvil-state.json").start()
    yield node
    node.stop()


@pytest.fixture
async def topics(settings: CommonSettings) -> CommonSettings:
    """This test's settings, with its topics created."""
    await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
    return settings


@pytest.fixture
def listeners() -> Iterator[list[ListenerProcess]]:
    """Listener processes a test starts; stopped after it."""
    started: list[ListenerProcess] = []
    yield started
    for proc in started:
        proc.stop()
