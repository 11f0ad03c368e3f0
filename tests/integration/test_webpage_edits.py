"""Editing on the web page at ``GET /``, in headless Chromium against a played API: the page's
files from the checkout, the OpenAPI document as the API builds it, and the API's answers
from the test (Playwright routes: no service runs). The task shows its options and hides the
duration, "Upload a source" posts the file and fills sourceUpload, the body has no duration,
a finished track offers Extend/Repaint/Cover and shows what it edits, and the track pages'
``?task=TASK&sourceTrack=ID`` links fill the form in. The whole pipeline in a browser:
tests/integration/test_webpage.py.

Uses Debian's ``/usr/bin/chromium`` (``scripts/test`` installs it); without it the tests fail.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from acesteps.options import _EDIT_PARAMETERS, api_name
from listener.api.deps import STATIC
from listener.api.openapi import openapi_document
from tests.integration.browser import watched_page

BASE = "http://acesteps.test"
RID = "0x" + "ed" * 32
SOURCE_ID = "0x" + "50" * 32
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
AUDIO_HASH = "0x" + "aa" * 32


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 800)
    return out.getvalue()


@dataclass
class PlayedApi:
    """What the page sends, and the answers it gets."""

    generated: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)

    def handle(self, route: Route) -> None:
        request = route.request
        path = urlsplit(request.url).path
        if path == "/":
            route.fulfill(path=STATIC / "index.html")
        elif path.startswith("/static/"):
            route.fulfill(path=STATIC / path.removeprefix("/static/"))
        elif path == "/api/openapi.json":
            route.fulfill(json=openapi_document(BASE))
        elif path == "/api/uploads" and request.method == "POST":
            self.uploads.append(request.post_data_buffer or b"")
            answer = {
                "cid": CID,
                "audioHash": AUDIO_HASH,
                "duration": 12.5,
                "sampleRate": 44100,
                "channels": 2,
                "format": "wav",
                "sizeBytes": 1234,
            }
            route.fulfill(status=201, json=answer)
        elif path == "/api/generate" and request.method == "POST":
            body = json.loads(request.post_data or "{}")
            self.generated.append(body)
            self.record = self.completed(body)
            route.fulfill(status=202, json={**self.record, "status": "queued"})
        elif path == f"/api/generations/{RID}/events":
            event = f"event: status\ndata: {json.dumps(self.record)}\n\n"
            route.fulfill(content_type="text/event-stream", body=event)
        elif path == f"/api/generations/{RID}/audio":
            route.fulfill(content_type="audio/wav", body=_wav())
        elif path == f"/api/generations/{RID}/verify":
            route.fulfill(json=self.verdict)
        elif path == f"/api/generations/{RID}":
            route.fulfill(json=self.record)
        else:
            route.fulfill(status=404, json={"error": {"code": "not_found", "message": path}})

    @staticmethod
    def completed(body: dict[str, Any]) -> dict[str, Any]:
        """The record of ``body``, published and final."""
        record = {
            "id": RID,
            "status": "completed",
            "final": True,
            "confirmations": 3,
            "prompt": body.get("prompt"),
            "format": "wav",
            "audioHash": "0x" + "ab" * 32,
            "cid": CID,
            "ipfsUrls": [],
            **{k: v for k, v in body.items() if k != "prompt"},
        }
        if body.get("task"):
            kind = "track" if body.get("sourceTrack") else "upload"
            source = {"kind": kind, "cid": CID, "audioHash": AUDIO_HASH, "durationS": 12.5}
            if kind == "track":
                source["requestId"] = body["sourceTrack"]
            record["editSource"] = source
        return record


@pytest.fixture
def played() -> PlayedApi:
    return PlayedApi()


@pytest.fixture
def page(browser: Browser, played: PlayedApi) -> Iterator[Page]:
    with watched_page(browser) as page:
        page.route(f"{BASE}/**", played.handle)
        yield page


def open_page(page: Page, query: str = "") -> None:
    page.goto(f"{BASE}/{query}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def field_of(page: Page, name: str) -> Any:
    return page.locator(f"#{name}").locator("xpath=ancestor::div[contains(@class,'field')][1]")


def test_an_extension_of_an_upload(page: Page, played: PlayedApi) -> None:
    open_page(page)
    expect(page.get_by_test_id("edit-box")).to_be_visible()
    body = openapi_document(BASE)["components"]["schemas"]["GenerateBody"]["properties"]
    edit_options = {"task", "sourceTrack", "sourceUpload"}
    edit_options |= {api_name(name) for names in _EDIT_PARAMETERS.values() for name in names}
    for name in set(body) - {"prompt", "tags", "lyrics", "duration", "format"}:
        box = "#edit-fields" if name in edit_options else "#more-options-fields"
        expect(page.locator(f"{box} #{name}")).to_be_attached()
    expect(page.locator("#duration")).to_be_visible()
    expect(field_of(page, "sourceTrack")).to_be_hidden()
    expect(page.get_by_test_id("source-file")).to_be_hidden()

    page.select_option("#task", "extend")
    expect(page.locator("#duration")).to_be_hidden()
    expect(field_of(page, "extendAfter")).to_be_visible()
    expect(field_of(page, "repaintStart")).to_be_hidden()
    expect(field_of(page, "coverStrength")).to_be_hidden()

    song = {"name": "song.wav", "mimeType": "audio/wav", "buffer": _wav()}
    page.set_input_files("#source-file", files=[song])
    expect(page.locator("#sourceUpload")).to_have_value(CID)
    expect(page.get_by_test_id("source-file-status")).to_contain_text(f"CID {CID}")
    [sent] = played.uploads
    assert b'name="file"; filename="song.wav"' in sent and _wav() in sent

    page.fill("#prompt", "the same, longer")
    page.fill("#extendAfter", "10")
    page.get_by_test_id("submit").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "completed")
    assert played.generated == [
        {
            "prompt": "the same, longer",
            "format": "mp3",
            "tags": [],
            "task": "extend",
            "sourceUpload": CID,
            "extendAfter": 10,
        }
    ]
    expect(page.get_by_test_id("lineage")).to_have_text(
        f"Extend of uploaded file {CID} (audioHash {AUDIO_HASH})"
    )

    # One button per task, and Repaint: the form, filled in to edit this very track.
    for task in body["task"]["anyOf"][0]["enum"]:
        expect(page.get_by_test_id(f"edit-{task}")).to_have_text(task.capitalize())
    page.get_by_test_id("edit-repaint").click()
    expect(page.locator("#task")).to_have_value("repaint")
    expect(page.locator("#sourceTrack")).to_have_value(RID)
    expect(page.locator("#sourceUpload")).to_have_value("")
    expect(page.locator("#repaintStart")).to_be_focused()
    expect(field_of(page, "extendAfter")).to_be_hidden()
    page.fill("#repaintStart", "2")
    page.fill("#repaintEnd", "4")
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("source-link")).to_have_text(RID)
    assert played.generated[-1] == {
        "prompt": "the same, longer",
        "format": "mp3",
        "tags": [],
        "task": "repaint",
        "sourceTrack": RID,
        "repaintStart": 2,
        "repaintEnd": 4,
    }


def test_a_track_pages_link_fills_the_form_in(page: Page, played: PlayedApi) -> None:
    open_page(page, f"?task=cover&sourceTrack={SOURCE_ID}")
    expect(page.locator("#task")).to_have_value("cover")
    expect(page.locator("#sourceTrack")).to_have_value(SOURCE_ID)
    expect(page.locator("#duration")).to_be_hidden()
    expect(page.locator("#coverStrength")).to_be_focused()

    page.select_option("#task", "")  # no edit after all: the duration is back
    expect(page.locator("#duration")).to_be_visible()
    expect(field_of(page, "sourceTrack")).to_be_hidden()
    page.fill("#prompt", "a new one")
    page.get_by_test_id("submit").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "completed")
    assert played.generated == [
        {"prompt": "a new one", "duration": 30, "format": "mp3", "tags": []}
    ]
    expect(page.get_by_test_id("lineage")).to_be_hidden()


def test_the_verdict_says_what_an_edit_edits(page: Page, played: PlayedApi) -> None:
    played.record = PlayedApi.completed(
        {"prompt": "p", "task": "extend", "sourceTrack": SOURCE_ID, "extendAfter": 5}
    )
    played.verdict = {
        "status": "MISMATCH",
        "reason": "the bytes match, but the edit's source differs",
        "manifestMatches": True,
        "editSourceKind": "track",
        "editSourceId": SOURCE_ID,
        "editSourceAudioHash": AUDIO_HASH,
        "editSourceOnchainAudioHash": "0x" + "bb" * 32,
        "editSourceMatches": False,
    }
    open_page(page, f"?id={RID}")
    expect(page.get_by_test_id("source-link")).to_have_text(SOURCE_ID)
    page.get_by_test_id("verify-button").click()
    expect(page.get_by_test_id("verify-status")).to_have_text("MISMATCH")
    expect(page.get_by_test_id("verify-edit")).to_have_text(
        f"track {SOURCE_ID} (audioHash {AUDIO_HASH}: DIFFERENT: registered 0x{'bb' * 32})"
    )
