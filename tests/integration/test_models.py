"""Two served models on the real stack: one request per model through the HTTP API.

The listener (with the API) and the generator read the same ``ACESTEPS_MODELS``: ``tiny-a``
(the tiny checkpoint, 8 steps, the default) and ``tiny-b`` (a second tiny checkpoint with other
random weights, 4 steps, its weights digest pinned). Each request's record and its generation
manifest (fetched from IPFS, checked against the chain) name the model that made it and its
weights digest; ``GET /api/models`` lists both; an unknown name is refused before it is
queued. A chain request names its model, controls and style preset (``ACESTEPS_PRESETS``: a
preset of tags only) in the contract's ``Options``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from acesteps.chainoptions import encode_options
from acesteps.manifest import parse_manifest
from acesteps.settings import CommonSettings
from generator.digest import weights_digest
from generator.settings import GeneratorSettings
from generator.tiny import build_tiny, ensure_tiny
from tests.integration.kafkaread import eventually
from tests.integration.pipeline import Pipeline, http_json, record_where, running_pipeline

B_SEED = 20_240_916


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tiny = ensure_tiny(GeneratorSettings().generator_tiny_dir)  # where the generator builds it
    other = build_tiny(tmp_path_factory.mktemp("models") / "tiny-b", seed=B_SEED)
    return {"tiny-a": tiny, "tiny-b": other}


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings, checkpoints: dict[str, Path]) -> Iterator[Pipeline]:
    models = {
        "tiny-a": {"source": "tiny"},
        "tiny-b": {
            "source": str(checkpoints["tiny-b"]),
            "steps": 4,
            "digest": weights_digest(checkpoints["tiny-b"]),
        },
    }
    presets = {"strings": {"tags": ["orchestral", "strings"]}}  # tags only: no adapter
    # One setting, read by the API and the generator alike.
    common = {"ACESTEPS_MODELS": json.dumps(models), "ACESTEPS_PRESETS": json.dumps(presets)}
    with running_pipeline(stack, common=common) as running:
        yield running


async def test_each_request_runs_on_the_model_it_names(
    pipeline: Pipeline, checkpoints: dict[str, Path]
) -> None:
    api = pipeline.api_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as http:
        status, listing = await http_json(http, f"{api}/api/models")
        assert status == 200 and listing["default"] == "tiny-a"
        assert [m["name"] for m in listing["models"]] == ["tiny-a", "tiny-b"]
        assert listing["models"][1]["weightsDigest"] == weights_digest(checkpoints["tiny-b"])
        records = {}
        for name in ("tiny-a", "tiny-b"):
            body = {"prompt": "a calm piano piece", "duration": 5, "seed": 5, "model": name}
            status, record = await http_json(
                http, f"{api}/api/generate?wait=150", method="POST", json=body
            )
            assert status == 200 and record["status"] == "completed", record
            records[name] = record
        for name, record in records.items():
            digest = weights_digest(checkpoints[name])
            assert record["model"] == name and record["weightsDigest"] == digest
            async with http.get(f"{api}/api/generations/{record['id']}/manifest") as answer:
                assert answer.status == 200, await answer.text()
                manifest = parse_manifest(await answer.read())  # the registered bytes
            assert manifest.model.name == name and manifest.model.weights_digest == digest
            assert manifest.request.options.model == name
            assert manifest.sampling.steps == (8 if name == "tiny-a" else 4)
            assert record["modelId"] == manifest.model.id
        assert records["tiny-a"]["audioHash"] != records["tiny-b"]["audioHash"]
        # An unknown model never reaches a generator.
        body = {"prompt": "a calm piano piece", "duration": 5, "model": "tiny-c"}
        status, refused = await http_json(http, f"{api}/api/generate", method="POST", json=body)
        assert status == 422 and refused["error"]["field"] == "model"


async def test_a_chain_request_names_its_model_controls_and_preset_and_pays_the_models_fee(
    pipeline: Pipeline,
) -> None:
    chain, fee = pipeline.chain, 10**15
    chain.wait(chain.call(chain.registry.functions.setModelFee("tiny-b", fee)))
    asked = encode_options(
        model="tiny-b", bpm=96, key="f# minor", time_signature=3, seed=5, preset="strings"
    )
    sent = {
        "ok": chain.request_with_options("a waltz", 5, asked, value=fee),
        "unknown_model": chain.request_with_options(
            "a waltz for strings", 5, encode_options(model="tiny-c")
        ),
        "unknown_preset": chain.request_with_options(
            "a waltz for strings", 5, encode_options(preset="tiny-c")
        ),
        "invalid_request": chain.request_with_options(
            "a waltz for strings", 5, encode_options(bpm=500)
        ),
    }
    ids = {
        name: request.request_id
        for name, request in zip(sent, chain.requested(list(sent.values())), strict=True)
    }

    done = await record_where(
        pipeline, ids["ok"], lambda g: g["status"] == "completed", "the track"
    )
    assert (done["model"], done["bpm"], done["key"], done["timeSignature"], done["seed"]) == (
        "tiny-b",
        96,
        "F# minor",
        3,
        5,
    )
    async with aiohttp.ClientSession() as http:
        url = f"{pipeline.api_url}/api/generations/{ids['ok']}/manifest"
        async with http.get(url) as answer:
            manifest = parse_manifest(await answer.read())
    assert manifest.model.name == "tiny-b" and manifest.request.chain is not None
    assert manifest.request.options.preset == "strings"
    assert "- bpm: 96\n" in manifest.model_input.text
    assert "- keyscale: F# minor\n" in manifest.model_input.text
    assert "# Caption\na waltz, orchestral, strings\n" in manifest.model_input.text  # its tags

    # Refused by the generator (no such model or preset) or by the listener (bpm out of
    # range): failed, with the reason, and the fee back on chain.
    for code in ("unknown_model", "unknown_preset", "invalid_request"):
        failed = await record_where(
            pipeline, ids[code], lambda g: g["status"] == "failed", f"the {code} failure"
        )
        assert failed["error"]["code"] == code, failed
    registry = chain.registry
    for code in ("unknown_model", "unknown_preset", "invalid_request"):
        rid = bytes.fromhex(ids[code][2:])

        async def refunded(rid: bytes = rid) -> bool:
            return int(registry.functions.requests(rid).call()[1]) == 3  # FAILED

        await eventually(refunded, 60, f"the refund of the {code} request")
    assert registry.functions.requestFeeFor("tiny-b").call() == fee
    assert registry.functions.requestFeeFor("tiny-a").call() == 0
