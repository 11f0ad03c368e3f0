"""Cross-origin calls from a real browser: a page served from another origin (another port on
loopback) submits a request with ``fetch`` and reads the answer, its ``Location`` header and
the record, through the listener's CORS (``ACESTEPS_API_CORS_ORIGINS``); a page from an origin
that is not listed cannot read anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser

from acesteps.settings import CommonSettings
from tests.integration.anvil import free_port
from tests.integration.pipeline import Pipeline, running_pipeline

PAGE = b"<!doctype html><title>a dApp</title><p>another origin</p>"

CALL_JS = """async ([api, key]) => {
  try {
    const posted = await fetch(api + "/api/generate?wait=0", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key,
                "Idempotency-Key": "cors-" + Math.random()},
      body: JSON.stringify({prompt: "a request from another origin", duration: 5}),
    });
    const body = await posted.json();
    const record = await (await fetch(api + posted.headers.get("Location"))).json();
    return {status: posted.status, location: posted.headers.get("Location"),
            id: body.id, recordStatus: record.status};
  } catch (e) {
    return {error: String(e)};
  }
}"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two page origins on loopback: the first is allowed, the second is not."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _Page) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="module")
def api(stack: CommonSettings, origins: tuple[str, str]) -> Iterator[Pipeline]:
    with running_pipeline(
        stack,
        start=("listener",),
        ACESTEPS_API_AUTH="on",
        ACESTEPS_API_KEYS='{"dapp": "a-dapp-key-0123456789"}',
        ACESTEPS_API_CORS_ORIGINS=origins[0],
    ) as pipeline:
        yield pipeline


def call_from(browser: Browser, origin: str, api: Pipeline) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(origin + "/")
        result: dict[str, Any] = page.evaluate(CALL_JS, [api.api_url, "a-dapp-key-0123456789"])
        return result
    finally:
        context.close()


def test_a_page_on_an_allowed_origin_submits_and_reads(
    browser: Browser, api: Pipeline, origins: tuple[str, str]
) -> None:
    result = call_from(browser, origins[0], api)
    assert result.get("status") == 202, result
    assert result["location"] == f"/api/generations/{result['id']}"  # an exposed header
    assert result["recordStatus"] == "queued"


def test_a_page_on_another_origin_reads_nothing(
    browser: Browser, api: Pipeline, origins: tuple[str, str]
) -> None:
    result = call_from(browser, origins[1], api)
    assert "error" in result and "Failed to fetch" in result["error"], result
