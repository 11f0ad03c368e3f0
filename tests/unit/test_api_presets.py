"""Style presets in the API (`listener.api.presets`): the check of a request's preset,
``GET /api/presets``, the request schema's ``preset`` in the OpenAPI document, and the
adapter digest a track's record carries (from ``TrackPublished.adapter_digest``).

The API app runs in-process (`tests.unit.apiapp`); the setting itself is `acesteps.presets`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from acesteps.manifest import AdapterPart
from acesteps.messages import AudioReady, TrackPublished
from acesteps.models import ModelsSettings
from acesteps.presets import PresetCatalog, PresetsSettings
from listener.api.deps import ApiFailure
from listener.api.openapi import openapi_document
from listener.api.presets import check_preset, describe
from listener.api.updates import apply
from publisher.handlers import _adapter_digest
from tests.factories import manifest_for, track_published
from tests.unit.apiapp import BODY

RID = "0x" + "ab" * 32
DIGEST = "sha256:" + "2e" * 32
MODELS = {"xl-turbo": {"source": "ACE-Step/acestep-v15-xl-turbo-diffusers"}, "tiny": "tiny"}
PRESETS = {
    "lofi": {
        "lora": "/srv/adapters/lofi/lofi-v2.safetensors",
        "scale": 0.8,
        "tags": ["lo-fi", "vinyl"],
        "digest": DIGEST,
        "models": ["xl-turbo"],
        "description": "dusty lo-fi",
    },
    "noir": "/home/operator/secret-place/noir",  # a directory, given as a path alone
    "orchestral": {"tags": ["orchestral", "strings"]},
}


def presets() -> PresetCatalog:
    return PresetsSettings(presets=PRESETS).preset_catalog()  # type: ignore[arg-type]


async def client_with_presets(make_client: Any) -> tuple[Any, Any, Any]:
    models = ModelsSettings(models=MODELS).catalog()  # type: ignore[arg-type]
    client, deps, kafka = await make_client(models=models)
    deps.presets = presets()  # what service.py builds from ACESTEPS_PRESETS
    return client, deps, kafka


# ------------------------------------------------------------------ check_preset


def _refusal(name: str | None, model: str) -> dict[str, Any]:
    with pytest.raises(ApiFailure) as caught:
        check_preset(presets(), name, model)
    assert caught.value.status_code == 422
    error: dict[str, Any] = json.loads(caught.value.text or "")["error"]
    return error


def test_an_unknown_preset_is_refused_naming_the_field_and_the_offered_ones() -> None:
    error = _refusal("jazz", "xl-turbo")
    assert error["code"] == "invalid_request" and error["field"] == "preset"
    assert "'jazz'" in error["message"] and "lofi, noir, orchestral" in error["message"]
    assert "GET /api/presets" in error["message"]


def test_a_preset_not_for_the_model_is_refused() -> None:
    error = _refusal("lofi", "tiny")
    assert error["code"] == "invalid_request" and error["field"] == "preset"
    assert "'lofi'" in error["message"] and "xl-turbo" in error["message"]
    assert "'tiny'" in error["message"]


def test_an_offered_preset_for_the_model_and_no_preset_pass() -> None:
    check_preset(presets(), "lofi", "xl-turbo")
    check_preset(presets(), "orchestral", "tiny")  # no models: every model
    check_preset(presets(), None, "tiny")
    check_preset(PresetCatalog({}), None, "default")  # none offered, none asked


def test_where_none_is_offered_any_name_is_refused() -> None:
    with pytest.raises(ApiFailure) as caught:
        check_preset(PresetCatalog({}), "lofi", "default")
    assert "offers none" in (caught.value.text or "")


# ------------------------------------------------------------------ GET /api/presets


def test_the_listing_names_adapter_files_never_their_paths() -> None:
    listing = describe(presets()).model_dump(mode="json", by_alias=True)
    rows = {row["name"]: row for row in listing["presets"]}
    assert list(rows) == ["lofi", "noir", "orchestral"]
    assert rows["lofi"] == {
        "name": "lofi",
        "description": "dusty lo-fi",
        "tags": ["lo-fi", "vinyl"],
        "lora": True,
        "adapterFile": "lofi-v2.safetensors",
        "scale": 0.8,
        "digest": DIGEST,
        "models": ["xl-turbo"],
    }
    noir = rows["noir"]
    assert (noir["lora"], noir["adapterFile"], noir["scale"]) == (True, "noir", 1.0)
    assert noir["digest"] is None and noir["models"] is None and noir["tags"] == []
    tags_only = rows["orchestral"]
    assert (tags_only["lora"], tags_only["adapterFile"], tags_only["scale"]) == (False, None, None)
    text = json.dumps(listing)
    assert "/srv" not in text and "secret-place" not in text and "operator" not in text


async def test_get_presets_lists_them_and_an_empty_list_where_none(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client()
    answer = await client.get("/api/presets")
    assert answer.status == 200 and await answer.json() == {"presets": []}
    deps.presets = presets()
    answer = await client.get("/api/presets")
    assert answer.status == 200 and "max-age=60" in answer.headers["Cache-Control"]
    body = await answer.json()
    assert [row["name"] for row in body["presets"]] == ["lofi", "noir", "orchestral"]
    assert "/srv/adapters" not in await answer.text()


# ------------------------------------------------------------------ POST /api/generate


async def test_a_request_with_an_offered_preset_reaches_the_topic(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await client_with_presets(make_client)
    answer = await client.post(
        "/api/generate", json={**BODY, "preset": "lofi"}
    )  # the default model, xl-turbo: the preset's
    assert answer.status == 202, await answer.json()
    assert (await answer.json())["preset"] == "lofi"
    tags_only = await client.post(
        "/api/generate", json={**BODY, "model": "tiny", "preset": "orchestral"}
    )
    assert tags_only.status == 202, await tags_only.json()
    plain = await client.post("/api/generate", json=BODY)
    assert plain.status == 202
    first, second, third = kafka.sent
    assert (first.preset, second.preset, third.preset) == ("lofi", "orchestral", None)
    # A request that names no preset is written as before the option existed.
    assert "preset" not in json.loads(third.model_dump_json())


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"preset": "jazz"}, "unknown preset 'jazz'"),
        ({"preset": "lofi", "model": "tiny"}, "not 'tiny'"),
        ({"preset": "not a name"}, "pattern"),
    ],
)
async def test_a_preset_not_offered_or_not_for_the_model_is_refused_before_it_is_queued(
    make_client: Any, body: dict[str, Any], words: str
) -> None:
    client, _, kafka = await client_with_presets(make_client)
    answer = await client.post("/api/generate", json={**BODY, **body})
    error = (await answer.json())["error"]
    assert answer.status == 422, error
    assert error["code"] == "invalid_request" and error["field"] == "preset"
    assert words in error["message"]
    assert kafka.sent == []
    listing = await (await client.get("/api/generations")).json()
    assert listing["items"] == []  # nothing recorded either


async def test_an_unknown_model_is_named_before_the_preset(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await client_with_presets(make_client)
    answer = await client.post("/api/generate", json={**BODY, "model": "xl-sft", "preset": "jazz"})
    assert answer.status == 422 and (await answer.json())["error"]["field"] == "model"


# ------------------------------------------------------------------ the OpenAPI document


def test_the_document_offers_the_preset_names_with_their_descriptions() -> None:
    document = openapi_document("http://api.test", ("xl-turbo", "tiny"), presets())
    schemas = document["components"]["schemas"]
    branch = schemas["GenerateBody"]["properties"]["preset"]["anyOf"][0]
    assert branch["enum"] == ["lofi", "noir", "orchestral"]
    assert branch["x-enumDescriptions"]["lofi"] == "dusty lo-fi"
    listing = document["paths"]["/api/presets"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"]["$ref"].endswith("PresetList")
    info = schemas["PresetInfo"]["properties"]
    assert {"name", "lora", "adapterFile", "scale", "digest", "models"} <= set(info)
    assert "adapterDigest" in schemas["Generation"]["properties"]


def test_where_none_is_offered_the_document_takes_only_null() -> None:
    for document in (
        openapi_document("http://api.test"),
        openapi_document("http://api.test", (), PresetCatalog({})),
    ):
        preset = document["components"]["schemas"]["GenerateBody"]["properties"]["preset"]
        assert preset["type"] == "null" and "anyOf" not in preset
        assert "offers none" in preset["description"]


async def test_the_served_document_follows_the_setting(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await client_with_presets(make_client)
    document = await (await client.get("/api/openapi.json")).json()
    preset = document["components"]["schemas"]["GenerateBody"]["properties"]["preset"]
    assert preset["anyOf"][0]["enum"] == ["lofi", "noir", "orchestral"]


# ------------------------------------------------------------------ the record


def _ready(adapter: AdapterPart | None) -> AudioReady:
    manifest = manifest_for(RID, b"x")
    if adapter is not None:
        manifest = manifest.model_copy(update={"adapter": adapter})
    return AudioReady(
        request_id=RID,
        audio_hash="0x" + "ab" * 32,
        cid=manifest.output.file.cid,
        size_bytes=1,
        chunks=1,
        format="mp3",
        sample_rate=44100,
        channels=2,
        duration_s=30,
        seed=1,
        model_id="test",
        source="http",
        manifest=manifest,
    )


def test_the_published_track_carries_its_adapters_digest() -> None:
    adapter = AdapterPart(preset="lofi", file="lofi.safetensors", scale=0.8, digest=DIGEST)
    assert _adapter_digest(_ready(adapter)) == DIGEST
    assert _adapter_digest(_ready(None)) is None
    # Absent from tracks without one: their messages keep their bytes.
    assert "adapter_digest" not in track_published(RID).model_dump(mode="json")
    with_one = track_published(RID, adapter_digest=DIGEST)
    assert TrackPublished.model_validate_json(with_one.model_dump_json()) == with_one
    with pytest.raises(ValueError, match="pattern"):
        track_published(RID, adapter_digest="sha256:short")


def test_the_record_shows_the_adapter_digest() -> None:
    record = apply(None, track_published(RID, adapter_digest=DIGEST))
    assert record is not None and record.adapter_digest == DIGEST
    public = record.public("http://api.test")
    assert public["adapterDigest"] == DIGEST
    # A later track without one (a re-registration) keeps it.
    again = apply(record, track_published(RID))
    assert again is not None and again.adapter_digest == DIGEST


async def test_the_track_page_shows_the_preset_and_the_adapters_digest(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await client_with_presets(make_client)
    rids = []
    for body in ({**BODY, "preset": "lofi"}, BODY):
        rid = (await (await client.post("/api/generate", json=body)).json())["id"]
        request = next(r for r in kafka.sent if r.request_id == rid)
        digest = DIGEST if request.preset else None
        await deps.store.apply(
            [(rid, request), (rid, track_published(rid, adapter_digest=digest))], {}
        )
        rids.append(rid)
    with_preset = await (await client.get(f"/tracks/{rids[0]}")).text()
    assert '<span data-testid="preset">lofi</span>' in with_preset
    assert f'data-testid="adapter-digest">{DIGEST}</span>' in with_preset
    assert (await (await client.get(f"/api/generations/{rids[0]}")).json())[
        "adapterDigest"
    ] == DIGEST
    without = await (await client.get(f"/tracks/{rids[1]}")).text()
    assert 'data-testid="preset"' not in without and "adapter-digest" not in without
