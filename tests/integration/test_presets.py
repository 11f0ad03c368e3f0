"""Style presets on the real stack: a request naming a LoRA preset through the HTTP API.

The listener (with the API) and the generator read the same ``ACESTEPS_PRESETS``: ``warm`` (a
tiny LoRA adapter of the tiny checkpoint, built in the test, with two tags) and ``strings``
(tags only). The preset's track differs from the same request without it, and its record and
its manifest (fetched from IPFS, checked against the chain) name the adapter's sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from acesteps.manifest import parse_manifest
from acesteps.settings import CommonSettings
from generator.settings import GeneratorSettings
from generator.tiny import ensure_tiny
from tests.integration.pipeline import Pipeline, http_json, running_pipeline
from tests.tinylora import build_tiny_lora


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny = ensure_tiny(GeneratorSettings().generator_tiny_dir)  # where the generator builds it
    return build_tiny_lora(tiny, tmp_path_factory.mktemp("loras") / "warm", seed=3)


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings, adapter: Path) -> Iterator[Pipeline]:
    presets = {
        "warm": {"lora": str(adapter.parent), "scale": 0.8, "tags": ["warm", "tape"]},
        "strings": {"tags": ["strings"], "description": "a string section"},
    }
    with running_pipeline(stack, common={"ACESTEPS_PRESETS": json.dumps(presets)}) as running:
        yield running


def _sha256(file: Path) -> str:
    return "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()


async def test_a_preset_track_runs_its_adapter_and_names_it(
    pipeline: Pipeline, adapter: Path
) -> None:
    api = pipeline.api_url
    digest = _sha256(adapter)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as http:
        status, listing = await http_json(http, f"{api}/api/presets")
        assert status == 200, listing
        assert [p["name"] for p in listing["presets"]] == ["warm", "strings"]
        records = {}
        for preset in ("warm", None):
            body = {"prompt": "a calm piano piece", "duration": 5, "seed": 5, "format": "wav"}
            if preset:
                body["preset"] = preset
            status, record = await http_json(
                http, f"{api}/api/generate?wait=150", method="POST", json=body
            )
            assert status == 200 and record["status"] == "completed", record
            records[preset] = record
        warm, plain = records["warm"], records[None]
        assert warm["audioHash"] != plain["audioHash"]
        assert warm["preset"] == "warm" and warm["adapterDigest"] == digest
        assert "adapterDigest" not in plain or plain["adapterDigest"] is None
        async with http.get(f"{api}/api/generations/{warm['id']}/manifest") as answer:
            assert answer.status == 200, await answer.text()
            manifest = parse_manifest(await answer.read())  # the registered bytes
        assert manifest.adapter is not None and manifest.adapter.digest == digest
        assert manifest.adapter.scale == 0.8 and manifest.adapter.preset == "warm"
        assert manifest.job.caption == "a calm piano piece, warm, tape"
        # A name the deployment does not offer never reaches a generator.
        body = {"prompt": "a calm piano piece", "duration": 5, "preset": "brass"}
        status, refused = await http_json(http, f"{api}/api/generate", method="POST", json=body)
        assert status == 422 and refused["error"]["field"] == "preset"
