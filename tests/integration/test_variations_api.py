"""Variations over HTTP on the real stack (API, Kafka, generator, publisher, IPFS, anvil).

One ``POST /api/generate`` with ``variations`` 3 is three requests (`acesteps.variations`):
the request itself, which the POST waits for, and two children with the next seeds. Each
ends ``completed`` with a track of its own, verifiable against the chain on its own, and each
child's registered manifest names its parent and its index. The web page links them.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from playwright.sync_api import Browser, expect

from acesteps.manifest import parse_manifest
from acesteps.registry import offchain_request_id
from acesteps.settings import CommonSettings
from acesteps.variations import variation_key
from tests.integration.browser import watched_page
from tests.integration.pipeline import Pipeline, final_record, http_json, running_pipeline


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


async def _completed(http: aiohttp.ClientSession, url: str) -> Any:
    record = await final_record(http, url)
    assert record["status"] == "completed", record
    return record


async def test_three_variations_are_three_verifiable_tracks(pipeline: Pipeline) -> None:
    api = pipeline.api_url
    body = {"prompt": "a calm piano piece", "duration": 5, "seed": 5, "variations": 3}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=200)) as http:
        status, parent = await http_json(
            http, f"{api}/api/generate?wait=150", method="POST", json=body
        )
        assert status == 200 and parent["status"] == "completed", (parent, pipeline.logs())
        pid = parent["id"]
        chain_id = pipeline.chain.w3.eth.chain_id
        children = [
            offchain_request_id(chain_id, pipeline.contract, variation_key(pid, k)) for k in (1, 2)
        ]
        assert parent["variations"] == 3 and parent["children"] == children
        assert parent["seed"] == 5
        records = [parent] + [
            await _completed(http, f"{api}/api/generations/{rid}") for rid in children
        ]
        assert len({r["audioHash"] for r in records}) == 3
        for k, record in enumerate(records[1:], start=1):
            assert record["seed"] == 5 + k
            assert (record["parent"], record["variation"]) == (pid, k)
            assert record["prompt"] == body["prompt"] and record["duration"] == 5
        for record in records:
            rid = record["id"]
            status, verdict = await http_json(http, f"{api}/api/generations/{rid}/verify")
            assert status == 200 and verdict["status"] == "MATCH", verdict
            assert verdict["onchainAudioHash"] == record["audioHash"]
            # HTTP tracks: the lineage is what their registered manifest says.
            lineage = (verdict["parentId"], verdict["variation"], verdict["lineage"])
            if rid == pid:
                assert lineage == (None, None, None)
            else:
                assert lineage == (pid, record["variation"], "the registered manifest")
            async with http.get(f"{api}/api/generations/{rid}/manifest") as answer:
                assert answer.status == 200, await answer.text()
                manifest = parse_manifest(await answer.read())  # the registered bytes
            assert manifest.job.seed == record["seed"]
            expected = (pid, record["variation"]) if rid != pid else (None, None)
            assert (manifest.request.parent_id, manifest.request.variation) == expected


def test_the_page_links_a_request_and_its_variations(browser: Browser, pipeline: Pipeline) -> None:
    body = json.dumps({"prompt": "a calm piano piece", "duration": 5, "variations": 2})
    post = urllib.request.Request(
        f"{pipeline.api_url}/api/generate?wait=0",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post) as answer:
        parent = json.load(answer)
    (child,) = parent["children"]
    with watched_page(browser) as page:
        page.goto(f"{pipeline.api_url}/?id={parent['id']}")
        link = page.locator('#family [data-testid="variation-link"]')
        expect(link).to_have_count(1)
        expect(link).to_have_attribute("href", f"?id={child}")
        link.click()
        expect(page.locator("#request-id")).to_have_text(child)
        back = page.locator('#family [data-testid="parent-link"]')
        expect(back).to_have_attribute("href", f"?id={parent['id']}")
        expect(page.locator("#family")).to_contain_text("Variation 1 of")
