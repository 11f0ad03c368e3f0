"""The verification page (``/verify``) and the track pages (``/tracks``), in headless Chromium
against the whole pipeline (listener, generator with the tiny model, publisher, a private
anvil, the stack's Kubo): the browser hashes the bytes and asks anvil itself, and says the same
as ``acesteps verify`` for the same input.

Uses Debian's ``/usr/bin/chromium`` (``scripts/test`` installs it); without it the tests fail.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from acesteps.dev.localstack import StackSettings
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import CHUNK_SIZE
from acesteps.settings import CommonSettings
from tests.integration.anvil import free_port
from tests.integration.browser import watched_page
from tests.integration.pipeline import Pipeline, running_pipeline

GENERATION_TIMEOUT_S = 240
VERDICT_TIMEOUT_MS = 60_000
HEADLINES = {
    "MATCH": "MATCH",
    "MISMATCH": "MISMATCH",
    "NOT_REGISTERED": "NOT REGISTERED",
    "UNKNOWN": "CANNOT VERIFY",
}

PLAY_JS = """async () => {
  const a = document.getElementById("player");
  a.muted = true;  // muted playback needs no user gesture
  await a.play();
  await new Promise((resolve) => setTimeout(resolve, 300));
  a.pause();
  return { readyState: a.readyState, duration: a.duration, currentTime: a.currentTime,
           error: a.error && a.error.code };
}"""


@dataclass
class Track:
    id: str
    record: dict[str, Any]
    data: bytes


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


@pytest.fixture(scope="module")
def track(pipeline: Pipeline) -> Track:
    """One track, requested over HTTP, completed, and its file downloaded."""
    body = json.dumps(
        {"prompt": "a verifiable <b>tune</b> & friends", "duration": 5, "tags": ["calm"]}
    )
    request = urllib.request.Request(
        f"{pipeline.api_url}/api/generate?wait=0",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        rid = json.load(answer)["id"]
    deadline = time.monotonic() + GENERATION_TIMEOUT_S
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{pipeline.api_url}/api/generations/{rid}") as answer:
            record = json.load(answer)
        if record["status"] in ("completed", "failed", "canceled", "revoked"):
            break
        time.sleep(0.5)
    assert record.get("status") == "completed", f"{record}\n{pipeline.logs()}"
    with urllib.request.urlopen(f"{pipeline.api_url}/api/generations/{rid}/audio") as answer:
        data = answer.read()
    assert keccak256_hex(data) == record["audioHash"]
    return Track(rid, record, data)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser, "ERR_CONNECTION_REFUSED") as page:
        yield page


# ------------------------------------------------------------------ helpers


def open_verify(page: Page, pipeline: Pipeline, query: str = "") -> None:
    page.goto(f"{pipeline.api_url}/verify{query}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def check(
    page: Page,
    target: str = "",
    data: bytes | None = None,
    name: str = "track.mp3",
    **settings: str,
) -> dict[str, str]:
    """Fill the form, press Verify, wait for the verdict; what the page shows."""
    if data is not None:
        page.set_input_files(
            "#file", files=[{"name": name, "mimeType": "audio/mpeg", "buffer": data}]
        )
    else:
        page.set_input_files("#file", files=[])
        page.evaluate("() => document.getElementById('clear-file').click()")
    page.fill("#target", target)
    if settings:
        page.evaluate("() => { document.getElementById('where').open = true; }")
        for field, value in settings.items():
            page.fill(f"#{field}", value)
    page.click("#check")
    verdict = page.locator("#verdict")
    expect(verdict).not_to_have_attribute("data-status", "", timeout=VERDICT_TIMEOUT_MS)
    shown = {
        "status": verdict.get_attribute("data-status") or "",
        "elapsedMs": verdict.get_attribute("data-elapsed-ms") or "",
        "hashMs": verdict.get_attribute("data-hash-ms") or "",
    }
    for field in (
        "verdict-headline",
        "verdict-reason",
        "computed-hash",
        "onchain-hash",
        "computed-cid",
        "onchain-cid",
        "request-id",
        "registered",
        "contract-verify",
        "manifest",
        "file-type",
        "lookup",
        "source",
    ):
        shown[field] = page.locator(f"#{field}").text_content() or ""
    return shown


def cli(pipeline: Pipeline, *argv: str) -> tuple[int, str]:
    """``acesteps verify ARGV`` against the pipeline's chain (unless ARGV names another):
    (exit code, first line)."""
    chain = {
        "--rpc-url": pipeline.anvil.url,
        "--contract": pipeline.contract,
        "--from-block": "0",
    }
    defaults = [x for k, v in chain.items() if k not in argv for x in (k, v)]
    done = subprocess.run(
        [sys.executable, "-m", "acesteps.cli", "verify", *argv, *defaults],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **pipeline.env},
        check=False,
    )
    return done.returncode, done.stdout.splitlines()[0] if done.stdout else done.stderr


def same_as_cli(shown: dict[str, str], code: int, line: str) -> None:
    """The page and the command say the same thing: headline, reason and exit code."""
    assert f"{shown['verdict-headline']}: {shown['verdict-reason']}" == line, (shown, line)
    exit_codes = {"MATCH": 0, "MISMATCH": 1, "UNKNOWN": 2, "NOT_REGISTERED": 3}
    assert exit_codes[shown["status"]] == code


def screenshot(page: Page, name: str) -> None:
    path = StackSettings().log_dir / "screenshots" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def kubo_cid(stack: CommonSettings, data: bytes) -> str:
    """What ``ipfs add --cid-version 1 --only-hash`` answers, through the Kubo RPC."""
    boundary = "acesteps-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="file"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{stack.ipfs_api_url}/api/v0/add?cid-version=1&only-hash=true&pin=false",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        cid: str = json.loads(answer.read().splitlines()[-1])["Hash"]
    return cid


# ------------------------------------------------------------------ the verification page


def test_the_real_track_matches_and_says_what_the_command_says(
    browser: Browser, pipeline: Pipeline, track: Track, page: Page, tmp_path: Any
) -> None:
    rid, record = track.id, track.record
    path = tmp_path / "track.mp3"
    path.write_bytes(track.data)
    open_verify(page, pipeline)
    # The settings come from this server, as suggestions.
    expect(page.locator("#rpc-url")).to_have_value(pipeline.anvil.url)
    expect(page.locator("#contract")).to_have_value(pipeline.contract)

    # 1. The file alone: hashed here, found on chain by its audioHash (requestOfAudio).
    shown = check(page, data=track.data)
    assert shown["status"] == "MATCH", shown
    assert shown["computed-hash"] == shown["onchain-hash"] == record["audioHash"]
    assert shown["computed-cid"] == shown["onchain-cid"] == record["cid"]
    assert shown["request-id"] == rid and shown["lookup"] == "requestOfAudio"
    assert record["txHash"] in shown["registered"]
    assert shown["contract-verify"] == "verify(requestId, computed audioHash) = true"
    assert shown["file-type"] == "MP3 audio"
    same_as_cli(shown, *cli(pipeline, "--file", str(path)))
    screenshot(page, "verify-page-match.png")

    # 2. The request id alone: the bytes read from the gateway, the manifest checked too.
    shown = check(page, target=rid)
    assert shown["status"] == "MATCH", shown
    assert shown["manifest"] == "the manifest matches its registration"
    assert shown["source"].startswith("gateway http://127.0.0.1:")
    same_as_cli(
        shown, *cli(pipeline, rid, "--gateway-url", pipeline.env["ACESTEPS_IPFS_GATEWAY_URL"])
    )

    # 3. Its CID, and a gateway URL of it: found by a scan of the TrackRegistered logs.
    shown = check(page, target=record["cid"])
    assert shown["status"] == "MATCH" and shown["request-id"] == rid, shown
    assert shown["lookup"].startswith("TrackRegistered logs, blocks 0-")
    gateway_url = f"{pipeline.env['ACESTEPS_IPFS_GATEWAY_URL']}/ipfs/{record['cid']}"
    shown = check(page, target=gateway_url)
    assert shown["status"] == "MATCH" and shown["request-id"] == rid, shown
    same_as_cli(shown, *cli(pipeline, gateway_url))


def test_a_tampered_copy_and_an_unknown_file(
    browser: Browser, pipeline: Pipeline, track: Track, page: Page, tmp_path: Any
) -> None:
    rid = track.id
    tampered = bytearray(track.data)
    tampered[len(tampered) // 2] ^= 0x01
    path = tmp_path / "tampered.mp3"
    path.write_bytes(bytes(tampered))
    open_verify(page, pipeline)

    # Against its request id: a registration exists, and these bytes are not it.
    shown = check(page, target=rid, data=bytes(tampered))
    assert shown["status"] == "MISMATCH", shown
    assert shown["verdict-reason"] == "audioHash and CID differ from the registered ones"
    assert shown["computed-hash"] == keccak256_hex(bytes(tampered)) != shown["onchain-hash"]
    assert shown["contract-verify"] == "verify(requestId, computed audioHash) = false"
    assert shown["manifest"] == "not checked: the bytes came from a local file"
    same_as_cli(shown, *cli(pipeline, rid, "--file", str(path)))

    # As a file alone: no registration has these bytes.
    shown = check(page, data=bytes(tampered))
    assert shown["status"] == "NOT_REGISTERED", shown
    assert shown["verdict-headline"] == "NOT REGISTERED"
    same_as_cli(shown, *cli(pipeline, "--file", str(path)))

    # Bytes nobody registered, and not audio at all: hashed all the same, and said so.
    unknown = os.urandom(50_000)
    path = tmp_path / "notes.txt"
    path.write_bytes(unknown)
    shown = check(page, data=unknown, name="notes.txt")
    assert shown["status"] == "NOT_REGISTERED", shown
    assert shown["computed-hash"] == keccak256_hex(unknown)
    assert "not an audio file" in shown["file-type"]
    same_as_cli(shown, *cli(pipeline, "--file", str(path)))


def test_without_the_view_a_file_is_found_by_a_log_scan(
    browser: Browser, pipeline: Pipeline, track: Track, page: Page
) -> None:
    """A deployment whose ABI has no ``requestOfAudio``: the page scans TrackRegistered logs."""
    with urllib.request.urlopen(f"{pipeline.api_url}/api/verify-config") as answer:
        config = json.load(answer)
    config["abi"] = [item for item in config["abi"] if item.get("name") != "requestOfAudio"]

    def older(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(config))

    page.route("**/api/verify-config", older)
    open_verify(page, pipeline)
    shown = check(page, data=track.data)
    assert shown["status"] == "MATCH" and shown["request-id"] == track.id, shown
    assert shown["lookup"].startswith("TrackRegistered logs, blocks 0-")
    shown = check(page, data=b"never registered")
    assert shown["status"] == "NOT_REGISTERED", shown
    assert shown["verdict-reason"].startswith("no TrackRegistered log with audioHash 0x")
    assert shown["verdict-reason"].endswith("from block 0")


def test_bad_input_gets_a_clear_message(
    browser: Browser, pipeline: Pipeline, track: Track, page: Page
) -> None:
    open_verify(page, pipeline)
    # A malformed id: said at once, no question asked of anyone.
    shown = check(page, target="0x1234")
    assert shown["status"] == "UNKNOWN" and shown["verdict-headline"] == "CANNOT VERIFY"
    same_as_cli(shown, *cli(pipeline, "0x1234"))
    # Nothing given.
    shown = check(page)
    assert shown["status"] == "UNKNOWN" and "drop or pick a file" in shown["verdict-reason"]

    # An RPC endpoint nobody listens on: refused at once.
    dead = f"http://127.0.0.1:{free_port()}"
    shown = check(page, target=track.id, **{"rpc-url": dead})
    assert shown["status"] == "UNKNOWN", shown
    assert shown["verdict-reason"] == f"chain unreachable: cannot reach {dead} (no connection)"
    code, line = cli(pipeline, track.id, "--rpc-url", dead)
    assert code == 2 and line.startswith("CANNOT VERIFY: chain unreachable: ")

    # One that accepts the connection and never answers: the timeout says so, no hang.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        shown = check(page, target=track.id, **{"rpc-url": url, "timeout": "2"})
        assert shown["status"] == "UNKNOWN", shown
        assert shown["verdict-reason"] == f"chain unreachable: {url} did not answer within 2 s"
        assert time.monotonic() - started < 20
    finally:
        silent.close()

    # A file over the page's limit: refused before reading it.
    page.evaluate(
        """() => {
          const big = new File([new Uint8Array(8)], "big.wav");
          Object.defineProperty(big, "size", { value: 200 * 1000 * 1000 });
          const box = new DataTransfer();
          box.items.add(big);
          const drop = document.getElementById("drop");
          drop.dispatchEvent(new DragEvent("drop", { dataTransfer: box, bubbles: true }));
        }"""
    )
    page.fill("#target", "")
    page.fill("#rpc-url", pipeline.anvil.url)
    page.click("#check")
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-status", "UNKNOWN", timeout=VERDICT_TIMEOUT_MS)
    expect(page.locator("#verdict-reason")).to_contain_text("larger than this page checks")


SIZES = {"1B": 1, "256KiB": CHUNK_SIZE, "256KiB+1": CHUNK_SIZE + 1, "10MB": 10 * 1000 * 1000}


def test_the_browsers_cid_is_kubos(
    browser: Browser, pipeline: Pipeline, stack: CommonSettings, page: Page
) -> None:
    open_verify(page, pipeline)
    timings = {}
    for label, size in SIZES.items():
        data = random.Random(size).randbytes(size)
        shown = check(page, data=data, name=f"{label}.bin")
        # Never registered: the page still shows what it computed.
        assert shown["status"] == "NOT_REGISTERED", shown
        assert shown["computed-cid"] == kubo_cid(stack, data), label
        assert shown["computed-hash"] == keccak256_hex(data), label
        timings[label] = {"hashMs": int(shown["hashMs"]), "verifyMs": int(shown["elapsedMs"])}
    print("verify-page timing:", json.dumps({"sizes": SIZES, "ms": timings}))


# ------------------------------------------------------------------ the track pages


def test_the_track_page_plays_and_its_verify_button_works(
    browser: Browser, pipeline: Pipeline, track: Track, page: Page
) -> None:
    page.goto(f"{pipeline.api_url}/tracks")
    item = page.locator(f'[data-testid="track-item"][data-id="{track.id}"]')
    expect(item).to_be_visible()
    item.locator("a").click()
    page.wait_for_url(f"**/tracks/{track.id}")
    expect(page.locator("#prompt")).to_have_count(0)  # not the form: the track's own page
    expect(page.locator('[data-testid="title"]')).to_have_text(track.record["prompt"])
    assert page.locator("meta[property='og:audio']").get_attribute("content") == (
        f"{pipeline.api_url}/api/generations/{track.id}/audio"
    )

    played = page.evaluate(PLAY_JS)
    assert played["error"] is None and played["readyState"] >= 2, played
    assert 4.5 < played["duration"] < 5.5 and played["currentTime"] > 0, played
    expect(page.locator("#waveform")).to_have_attribute("data-drawn", "true", timeout=30_000)
    screenshot(page, "track-page.png")

    page.click('[data-testid="verify-link"]')
    page.wait_for_url(f"**/verify?id={track.id}")
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-status", "MATCH", timeout=VERDICT_TIMEOUT_MS)
    expect(page.locator("#request-id")).to_have_text(track.id)
