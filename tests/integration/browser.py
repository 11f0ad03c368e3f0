"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` (``scripts/test``
installs it; Playwright's own browser download is not reachable here), driven by Playwright.
Without it the tests fail, saying how to install it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

__all__ = ["CHROMIUM", "browser", "watched_page"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium "
            "(apt-get install -y --no-install-recommends chromium) or run scripts/test",
            pytrace=False,
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def watched_page(browser: Browser, *ignored: str) -> Iterator[Page]:
    """A fresh page whose uncaught exceptions and console errors fail the test when it is
    done; failed resource loads (an answer the test asked for) and console errors containing
    one of ``ignored`` do not count."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

    def console(message: ConsoleMessage) -> None:
        text = message.text
        if message.type == "error" and "Failed to load resource" not in text:
            if not any(part in text for part in ignored):
                errors.append(f"console: {text}")

    page.on("console", console)
    try:
        yield page
        assert not errors, "the page reported errors:\n" + "\n".join(errors)
    finally:
        context.close()
