"""The main job end to end: `acesteps up`, one on-chain and one HTTP request through all three
services, `acesteps demo` prints one registered, verified track per request, `acesteps down`
stops the services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from acesteps.hashing import keccak256_hex
from acesteps.settings import CommonSettings
from tests.integration.anvil import free_port


def acesteps(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "acesteps.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"acesteps {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_one_request_through_the_whole_pipeline(settings: CommonSettings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ACESTEPS_TOPIC_PREFIX": settings.topic_prefix,
        "ACESTEPS_STACK_LOG_DIR": str(tmp_path / "logs"),  # pid files live beside the logs
        "ACESTEPS_DEPLOYMENT_FILE": str(tmp_path / "deployment.json"),
        "ACESTEPS_GENERATOR_MODEL": "tiny",
        "ACESTEPS_GENERATOR_INSTANCE_ID": f"gen-{settings.topic_prefix}",
        "ACESTEPS_PUBLISHER_INSTANCE_ID": f"pub-{settings.topic_prefix}",
        "ACESTEPS_API_URL": f"http://127.0.0.1:{free_port()}",
        "ACESTEPS_API_STORE_URL": f"sqlite:///{tmp_path / 'status.sqlite3'}",
        "ACESTEPS_API_AUDIO_CACHE_DIR": str(tmp_path / "audio"),
    }
    try:
        started = json.loads(acesteps(env, "up"))
        line = acesteps(env, "demo", "--prompt", "a calm piano piece", "--duration", "5")
    finally:
        acesteps(env, "down")
    results = [json.loads(x) for x in line.splitlines() if x.startswith("{")]
    assert [r["source"] for r in results] == ["chain", "http"]
    assert started["api"] == env["ACESTEPS_API_URL"]
    for result in results:
        assert result["verified"] == "MATCH" and result["status"] == "completed"
        assert result["contract"] == started["contract"]
        assert result["model"].startswith("tiny-") and result["tinyModel"] is True
        data = Path(result["file"]).read_bytes()
        assert keccak256_hex(data) == result["audioHash"]
        assert result["ipfsGateway"].endswith(result["cid"])
        assert result["txHash"].startswith("0x") and result["apiUrl"] == env["ACESTEPS_API_URL"]
    assert results[0]["requestTx"].startswith("0x") and "requestTx" not in results[1]
    assert results[0]["id"] != results[1]["id"]
    # down stopped every service it started.
    assert not list((tmp_path).glob("*.service.pid"))
