"""Service log lines: plain or JSON, each with the request id it is about."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from acesteps import logs


@pytest.fixture
def root() -> Iterator[None]:
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    yield
    logging.getLogger().handlers[:] = saved[0]
    logging.getLogger().setLevel(saved[1])


RID = "0x" + "ab" * 32


def test_json_lines_carry_the_request_id_and_the_exception(
    root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("generator", "INFO", "json")
    log = logging.getLogger("acesteps.test")
    log.info("outside")
    with logs.about(RID):
        log.warning("inside %d", 3)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.debug("not at INFO")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["outside", "inside 3", "failed"]
    assert "request_id" not in lines[0]
    assert lines[1]["request_id"] == RID and lines[1]["level"] == "WARNING"
    assert lines[1]["service"] == "generator" and lines[1]["logger"] == "acesteps.test"
    assert "ValueError: boom" in lines[2]["exc"] and lines[2]["ts"].endswith("+00:00")


def test_plain_lines_tag_the_request_id(root: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("listener", "INFO", "plain")
    with logs.about(RID):
        logging.getLogger("x").info("hello")
    logging.getLogger("x").info("bye")
    first, second = capsys.readouterr().err.splitlines()
    assert first.endswith(f"INFO x: [{RID}] hello") and second.endswith("INFO x: bye")
