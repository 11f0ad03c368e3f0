"""The web page at ``GET /``, driven in headless Chromium against the whole pipeline: submit
the form, follow the progress, play the track, see its waveform, verify it against the chain.

Uses Debian's ``/usr/bin/chromium`` (``scripts/test`` installs it); without it the tests fail.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from acesteps.dev.localstack import StackSettings
from acesteps.settings import CommonSettings
from tests.integration.browser import watched_page
from tests.integration.pipeline import Pipeline, running_pipeline

FINAL = ("completed", "failed", "revoked")
GENERATION_TIMEOUT_MS = 240_000

# Pixels of the waveform canvas that differ from its top-left corner (the background).
DRAWN_PIXELS_JS = """() => {
  const c = document.getElementById("waveform");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let drawn = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3]) drawn++;
  }
  return { drawn, width: c.width, height: c.height };
}"""

PLAY_JS = """async () => {
  const a = document.getElementById("player");
  a.muted = true;  // muted playback needs no user gesture
  await a.play();
  await new Promise((resolve) => setTimeout(resolve, 300));
  a.pause();
  return { readyState: a.readyState, duration: a.duration, currentTime: a.currentTime,
           src: a.currentSrc, error: a.error && a.error.code };
}"""


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser) as page:
        yield page


def _record(pipeline: Pipeline, request_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{pipeline.api_url}/api/generations/{request_id}") as answer:
        body: dict[str, Any] = json.load(answer)
    return body


def _wait_final(page: Page, pipeline: Pipeline) -> str:
    page.wait_for_function(
        f"{list(FINAL)}.includes(document.getElementById('status').dataset.status)",
        timeout=GENERATION_TIMEOUT_MS,
    )
    status = page.locator("#status").get_attribute("data-status")
    failure = page.locator("#failure").text_content()
    assert status == "completed", f"the page shows {status}: {failure}\n{pipeline.logs()}"
    return page.locator("#request-id").text_content() or ""


def test_generate_play_and_verify(browser: Browser, pipeline: Pipeline, page: Page) -> None:
    # 1. Submit the form.
    page.goto(f"{pipeline.api_url}/")
    page.fill("#prompt", "calm lo-fi piano with soft rain")
    page.fill("#tags", "lo-fi, piano, calm")
    page.fill("#lyrics", "")
    page.fill("#duration", "5")
    page.select_option("#format", "mp3")
    # Every further request option has a field, built from the OpenAPI document (an edit's
    # in the edit box: tests/integration/test_webpage_edits.py).
    expect(page.locator("#more-options")).to_be_visible()
    page.click("#more-options summary")
    with urllib.request.urlopen(f"{pipeline.api_url}/api/openapi.json") as answer:
        options = json.load(answer)["components"]["schemas"]["GenerateBody"]["properties"]
    for name in set(options) - {"prompt", "tags", "lyrics", "duration", "format"}:
        expect(page.locator(f"#more-options-fields #{name}, #edit-fields #{name}")).to_be_attached()
    page.fill("#seed", "7")
    page.click("#submit")

    # 2. Live progress, up to completed; the address now names the request.
    expect(page.locator("#track")).to_be_visible()
    request_id = _wait_final(page, pipeline)
    assert request_id.startswith("0x") and len(request_id) == 66
    assert page.url.endswith(f"?id={request_id}")
    for step in ("queued", "generating", "publishing", "completed"):
        expect(page.locator(f'#steps li[data-step="{step}"]')).to_have_class("done")
    record = _record(pipeline, request_id)
    assert record["status"] == "completed"
    assert record["seed"] == 7  # the built seed field was sent

    # 3. The player has the track and plays it.
    player = page.locator("#player")
    assert player.get_attribute("src") == f"api/generations/{request_id}/audio"
    played = page.evaluate(PLAY_JS)
    assert played["error"] is None, played
    assert played["readyState"] >= 2, played
    assert 4.5 < played["duration"] < 5.5, played
    assert played["currentTime"] > 0, played

    # 4. The waveform was drawn from the decoded audio.
    expect(page.locator("#waveform")).to_have_attribute("data-drawn", "true", timeout=30_000)
    pixels = page.evaluate(DRAWN_PIXELS_JS)
    assert pixels["drawn"] >= pixels["width"], pixels  # at least one mark per column

    # 5. What the page shows is what the API recorded.
    expect(page.locator("#audio-hash")).to_have_text(str(record["audioHash"]))
    expect(page.locator("#cid")).to_have_text(str(record["cid"]))
    gateway = next(u for u in record["ipfsUrls"] if u.startswith("http"))
    expect(page.locator("#cid")).to_have_attribute("href", gateway)
    expect(page.locator("#tx-hash")).to_have_text(str(record["txHash"]))

    # 6. Verify: the file's hashes match the chain's registration.
    page.click("#verify-button")
    result = page.locator("#verify-result")
    expect(result).to_have_attribute("data-status", "MATCH", timeout=60_000)
    expect(page.locator("#verify-status")).to_have_text("MATCH")
    expect(page.locator("#verify-onchain-hash")).to_have_text(str(record["audioHash"]))
    expect(page.locator("#verify-computed-hash")).to_have_text(str(record["audioHash"]))
    expect(page.locator("#verify-onchain-cid")).to_have_text(str(record["cid"]))
    expect(page.locator("#verify-computed-cid")).to_have_text(str(record["cid"]))
    expect(page.locator("#verify-tx")).to_have_text(str(record["txHash"]))
    expect(page.locator("#verify-manifest")).to_have_text("matches its registration")

    # 6b. The provenance: the registered manifest, and how to re-run the track.
    expect(page.locator("#provenance")).to_be_visible()
    page.click("#provenance summary")
    expect(page.locator("#manifest-link")).to_have_text(str(record["manifestHash"]))
    expect(page.locator("#prov-model")).to_contain_text("tiny-acestep")
    expect(page.locator("#prov-weights")).to_contain_text("sha256:")
    expect(page.locator("#prov-sampling")).to_contain_text("seed 7")
    expect(page.locator("#prov-command")).to_have_text(f"acesteps reproduce {request_id}")

    screenshot = StackSettings().log_dir / "screenshots" / "page-verified.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")

    # 7. /?id= follows an existing request.
    other = page.context.new_page()
    other.goto(f"{pipeline.api_url}/?id={request_id}")
    expect(other.locator("#status")).to_have_attribute("data-status", "completed")
    expect(other.locator("#audio-hash")).to_have_text(str(record["audioHash"]))
    other.close()


@pytest.mark.parametrize(
    ("field", "prompt", "duration"),
    [("duration", "calm piano", "500"), ("prompt", "   ", "5")],
)
def test_validation_error_names_the_field(
    browser: Browser, pipeline: Pipeline, page: Page, field: str, prompt: str, duration: str
) -> None:
    page.goto(f"{pipeline.api_url}/")
    page.fill("#prompt", prompt)
    page.fill("#duration", duration)
    page.click("#submit")

    error = page.locator(f"#{field}-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(field)
    expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#track")).to_be_hidden()
    assert "?id=" not in page.url


def test_refused_request_shows_the_reason(browser: Browser, pipeline: Pipeline, page: Page) -> None:
    page.goto(f"{pipeline.api_url}/")
    page.fill("#prompt", "a ballad in the style of Taylor Swift")
    page.fill("#duration", "5")
    page.click("#submit")

    status = page.locator("#status")
    expect(status).to_have_attribute("data-status", "failed", timeout=GENERATION_TIMEOUT_MS)
    request_id = page.locator("#request-id").text_content() or ""
    error = _record(pipeline, request_id)["error"]
    assert isinstance(error, dict), error
    failure = page.locator("#failure")
    expect(failure).to_be_visible()
    expect(failure).to_contain_text(str(error["message"]))
    expect(failure).to_contain_text(str(error["code"]))
    expect(page.locator("#final-step")).to_have_text("Failed")
    expect(page.locator("#final-step")).to_have_class("failed")
    expect(page.locator("#result")).to_be_hidden()


def test_unknown_request_id(browser: Browser, pipeline: Pipeline, page: Page) -> None:
    page.goto(f"{pipeline.api_url}/?id=0x{'ab' * 32}")
    expect(page.locator("#status")).to_contain_text("no request 0x" + "ab" * 32)
    expect(page.locator("#result")).to_be_hidden()
