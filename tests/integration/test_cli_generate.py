"""``acesteps generate`` and ``acesteps status`` as a user runs them, against the real service:
Kafka, Kubo, anvil, and the listener (with its API), generator and publisher running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from acesteps.hashing import keccak256_hex
from acesteps.settings import CommonSettings
from tests.integration.anvil import free_port
from tests.integration.pipeline import Pipeline, running_pipeline

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


def acesteps(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ACESTEPS_API_URL", "ACESTEPS_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "acesteps.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_generate_downloads_a_track_that_matches_its_hash(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "rain.mp3"
    run = acesteps(
        "generate",
        "chill lofi beat with rain sounds",
        "--duration", "5",
        "--tags", "lofi,rain",
        "--seed", "3",
        "--api-url", pipeline.api_url,
        "--out", str(out),
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stderr}\n{pipeline.logs()}"
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["status"] == "completed"
    assert record["file"] == str(out)
    assert record["tags"] == ["lofi", "rain"] and record["seed"] == 3
    assert keccak256_hex(out.read_bytes()) == record["audioHash"]
    assert f"request {record['id']}" in run.stderr
    assert "completed" in run.stderr  # the progress, as plain lines (stderr is not a TTY)

    status = acesteps("status", record["id"], "--json", "--api-url", pipeline.api_url)
    assert status.returncode == 0, status.stderr
    again = json.loads(status.stdout)
    assert again["status"] == "completed"
    assert again["audioHash"] == record["audioHash"] and again["txHash"] == record["txHash"]

    summary = acesteps("status", record["id"], "--api-url", pipeline.api_url)
    assert summary.returncode == 0
    assert record["cid"] in summary.stdout and "completed" in summary.stdout


def test_generate_without_waiting_then_status(pipeline: Pipeline, tmp_path: Path) -> None:
    run = acesteps(
        "generate", "a calm piano piece", "--duration", "5", "--no-wait",
        "--api-url", pipeline.api_url, "--out", str(tmp_path / "x.mp3"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["status"] in ("queued", "generating", "publishing", "completed")
    assert not (tmp_path / "x.mp3").exists()
    status = acesteps("status", record["id"], "--json", "--api-url", pipeline.api_url)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == record["id"]


def test_an_invalid_duration_exits_2_naming_the_field(pipeline: Pipeline) -> None:
    run = acesteps("generate", "too short", "--duration", "1", "--api-url", pipeline.api_url)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.startswith("error: invalid_request: duration")


def test_status_of_an_unknown_request_exits_1(pipeline: Pipeline) -> None:
    run = acesteps("status", "0x" + "0" * 64, "--api-url", pipeline.api_url)
    assert run.returncode == 1
    assert "not_found" in run.stderr


def test_an_unreachable_api_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = acesteps("generate", "anything", "--duration", "5", "--api-url", url, timeout_s=60)
    assert run.returncode == 3
    assert "error: unreachable" in run.stderr
