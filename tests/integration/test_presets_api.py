"""Style presets at the API, on the real stack: the listener reads ``ACESTEPS_MODELS`` and
``ACESTEPS_PRESETS`` (a file, as an operator mounts it) as the generators would, lists the
presets at ``GET /api/presets`` (adapter file names, never their paths), offers their names in
its OpenAPI document, and refuses a preset it does not offer, or one that is not for the
request's model, with 422 before anything reaches Kafka; the web page's form offers them as
a choice. No generator runs: nothing here needs one (generating with a preset is the
generator's test).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from playwright.sync_api import Browser, expect

from acesteps.messages import GenerationRequest
from acesteps.settings import CommonSettings
from acesteps.topics import Topics
from tests.integration.browser import watched_page
from tests.integration.kafkaread import read_all
from tests.integration.listening import of_type
from tests.integration.pipeline import Pipeline, http_json, running_pipeline

DIGEST = "sha256:" + "5a" * 32
MODELS = {"tiny-a": {"source": "tiny"}, "tiny-b": {"source": "tiny", "steps": 4}}


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    adapters = tmp_path_factory.mktemp("adapters")
    presets = {
        "lofi": {
            "lora": str(adapters / "lofi.safetensors"),  # the API never reads it
            "scale": 0.7,
            "tags": ["lo-fi"],
            "digest": DIGEST,
            "models": ["tiny-a"],
            "description": "dusty lo-fi",
        },
        "strings": {"tags": ["orchestral", "strings"]},
    }
    table = adapters / "presets.json"
    table.write_text(json.dumps(presets))
    with running_pipeline(
        stack,
        start=("listener",),
        ACESTEPS_MODELS=json.dumps(MODELS),
        ACESTEPS_PRESETS=str(table),
    ) as running:
        yield running


async def test_the_presets_are_listed_and_offered_in_the_document(pipeline: Pipeline) -> None:
    api = pipeline.api_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        status, listing = await http_json(http, f"{api}/api/presets")
        assert status == 200, listing
        lofi, strings = listing["presets"]
        assert lofi == {
            "name": "lofi",
            "description": "dusty lo-fi",
            "tags": ["lo-fi"],
            "lora": True,
            "adapterFile": "lofi.safetensors",
            "scale": 0.7,
            "digest": DIGEST,
            "models": ["tiny-a"],
        }
        assert strings["name"] == "strings" and not strings["lora"]
        assert strings["models"] is None and strings["tags"] == ["orchestral", "strings"]
        status, document = await http_json(http, f"{api}/api/openapi.json")
        assert "/api/presets" in document["paths"]
        preset = document["components"]["schemas"]["GenerateBody"]["properties"]["preset"]
        assert preset["anyOf"][0]["enum"] == ["lofi", "strings"]


async def test_a_preset_not_offered_or_not_for_the_model_is_never_queued(
    pipeline: Pipeline, stack: CommonSettings
) -> None:
    api = pipeline.api_url
    base = {"prompt": "a calm piano piece", "duration": 5}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        refused = [
            ({"preset": "jazz"}, "unknown preset 'jazz'"),
            ({"preset": "lofi", "model": "tiny-b"}, "not 'tiny-b'"),
        ]
        for extra, words in refused:
            status, body = await http_json(
                http, f"{api}/api/generate?wait=0", method="POST", json={**base, **extra}
            )
            assert status == 422, body
            assert body["error"]["code"] == "invalid_request"
            assert body["error"]["field"] == "preset" and words in body["error"]["message"]
        # Accepted: the preset on its model (tiny-a, the default), and one for every model.
        accepted = []
        for extra in ({"preset": "lofi"}, {"preset": "strings", "model": "tiny-b"}):
            status, body = await http_json(
                http, f"{api}/api/generate?wait=0", method="POST", json={**base, **extra}
            )
            assert status == 202 and body["preset"] == extra["preset"], body
            accepted.append(body["id"])
        status, page = await http_json(http, f"{api}/api/generations")
        assert sorted(item["id"] for item in page["items"]) == sorted(accepted)
    queued = await read_all(stack.kafka_bootstrap, Topics(pipeline.prefix).requests)
    # The refused ones never reached Kafka (the accepted ones may twice: the outbox resends).
    assert {r.preset for r in of_type(queued, GenerationRequest)} == {"lofi", "strings"}


def test_the_web_form_offers_the_presets_with_their_descriptions(
    browser: Browser, pipeline: Pipeline
) -> None:
    with watched_page(browser) as page:
        page.goto(f"{pipeline.api_url}/")
        expect(page.locator("#more-options")).to_be_visible()
        page.click("#more-options summary")
        choice = page.locator("#more-options-fields select#preset")
        expect(choice).to_be_visible()
        labels = choice.locator("option").all_text_contents()
        assert labels == ["(default)", "lofi: dusty lo-fi", "strings"], labels
        page.fill("#prompt", "a calm piano piece")
        page.fill("#duration", "5")
        choice.select_option("lofi")
        page.click("#submit")
        expect(page.locator("#track")).to_be_visible()
        request_id = page.locator("#request-id").text_content() or ""
    with urllib.request.urlopen(f"{pipeline.api_url}/api/generations/{request_id}") as answer:
        assert json.load(answer)["preset"] == "lofi"


def test_where_none_is_offered_the_form_has_no_preset_to_choose(
    browser: Browser, stack: CommonSettings
) -> None:
    with running_pipeline(stack, start=("listener",)) as bare, watched_page(browser) as page:
        page.goto(f"{bare.api_url}/")
        expect(page.locator("#more-options")).to_be_visible()  # the other options
        page.click("#more-options summary")
        expect(page.locator("#more-options-fields #seed")).to_be_visible()
        expect(page.locator("#more-options-fields #preset")).to_be_hidden()
        with urllib.request.urlopen(f"{bare.api_url}/api/presets") as answer:
            assert json.load(answer) == {"presets": []}
