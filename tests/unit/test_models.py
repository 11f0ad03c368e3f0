"""Served models by name (`acesteps.models`): the setting, the API's check and ``GET /api/models``,
and the records made before models had names.

The API app runs in-process (`tests.unit.apiapp`); the generator's side is in
``test_generator_served.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from acesteps.manifest import canonical, parse_manifest
from acesteps.messages import GenerationRequest
from acesteps.models import TASKS, Catalog, ModelsSettings, UnknownModel, guess_variant
from generator.settings import GeneratorSettings
from listener.api.openapi import openapi_document
from listener.settings import ListenerSettings
from tests.factories import manifest_for
from tests.unit.apiapp import BODY

RID = "0x" + "ab" * 32
DIGEST = "sha256:" + "1f" * 32
TABLE = {
    "xl-turbo": {"source": "ACE-Step/acestep-v15-xl-turbo-diffusers", "steps": 8},
    "xl-base": {
        "source": "/srv/models/acestep-v15-xl-base",
        "variant": "base",
        "steps": 50,
        "guidance": 7.0,
        "digest": DIGEST,
    },
    "tiny": "tiny",
}


def catalog(default: str | None = None) -> Catalog:
    return ModelsSettings(models=TABLE, model_default=default).catalog()  # type: ignore[arg-type]


# ------------------------------------------------------------------ the setting


def test_the_setting_is_json_or_a_file_and_the_first_model_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACESTEPS_MODELS", json.dumps(TABLE))
    from_env = GeneratorSettings().served()
    assert from_env.names == ("xl-turbo", "xl-base", "tiny") and from_env.default == "xl-turbo"
    assert from_env.models["tiny"].spec is not None and from_env.models["tiny"].spec.steps == 8
    path = tmp_path / "models.json"
    path.write_text(json.dumps(TABLE))
    monkeypatch.setenv("ACESTEPS_MODELS", str(path))
    monkeypatch.setenv("ACESTEPS_MODEL_DEFAULT", "tiny")
    listener = ListenerSettings().catalog()  # the API reads the same setting
    assert listener.names == from_env.names and listener.default == "tiny"


@pytest.mark.parametrize(
    ("table", "default", "wrong"),
    [
        ({"bad name!": "tiny"}, None, "models"),
        ({"a": {"source": "tiny", "steps": 0}}, None, "models"),
        ({"a": {"source": "tiny", "colour": "red"}}, None, "models"),
        ({"a": {"source": "tiny", "digest": "md5:x"}}, None, "models"),
        ({}, None, "models"),
        ({"a": "tiny"}, "b", "model_default"),
    ],
)
def test_a_bad_table_names_the_setting(table: Any, default: str | None, wrong: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ModelsSettings(models=table, model_default=default)
    assert exc.value.errors()[0]["loc"][0] == wrong


def test_without_the_table_one_model_is_served_under_the_default_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACESTEPS_GENERATOR_MODEL", "tiny")
    monkeypatch.setenv("ACESTEPS_GENERATOR_STEPS", "6")
    generator = GeneratorSettings().served()
    assert generator.names == ("default",)
    spec = generator.resolve(None).spec
    assert spec is not None and (spec.source, spec.steps) == ("tiny", 6)
    api = ListenerSettings().catalog()  # the API does not read ACESTEPS_GENERATOR_*
    assert api.names == ("default",) and api.resolve("default").spec is None
    monkeypatch.setenv("ACESTEPS_MODEL_DEFAULT", "xl")
    assert GeneratorSettings().served().names == ListenerSettings().catalog().names == ("xl",)


def test_names_resolve_and_unknown_ones_are_refused_with_the_served_list() -> None:
    served = catalog()
    assert served.resolve(None).name == "xl-turbo" and served.resolve("tiny").name == "tiny"
    with pytest.raises(UnknownModel, match="serves xl-turbo, xl-base, tiny"):
        served.resolve("xl-sft")


def test_variants_and_tasks() -> None:
    assert guess_variant("ACE-Step/acestep-v15-xl-turbo-diffusers") == "turbo"
    assert guess_variant("ACE-Step/acestep-v15-sft-diffusers") == "sft"
    assert guess_variant("/models/acestep-v15-base") == "base"
    assert guess_variant("/models/mine") is None
    assert "extract" not in TASKS["turbo"] and {"extract", "lego", "complete"} <= set(TASKS["sft"])


# ------------------------------------------------------------------ the API


async def test_get_models_lists_names_variants_steps_tasks_and_pinned_digests(
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    client, _, _ = await make_client(models=catalog("tiny"))
    answer = await client.get("/api/models")
    assert answer.status == 200
    body = await answer.json()
    assert body["default"] == "tiny"
    rows = {row["name"]: row for row in body["models"]}
    assert list(rows) == ["xl-turbo", "xl-base", "tiny"]
    assert rows["tiny"]["default"] and not rows["xl-turbo"]["default"]
    assert rows["xl-turbo"] | {} == {
        "name": "xl-turbo",
        "default": False,
        "source": "ACE-Step/acestep-v15-xl-turbo-diffusers",
        "revision": None,
        "variant": "turbo",
        "steps": 8,
        "guidance": None,
        "shift": 3.0,
        "tasks": ["text2music", "repaint", "cover"],
        "weightsDigest": None,
    }
    base = rows["xl-base"]
    assert base["source"] == "acestep-v15-xl-base"  # a directory by its name only
    assert (base["variant"], base["steps"], base["guidance"]) == ("base", 50, 7.0)
    assert "lego" in base["tasks"] and base["weightsDigest"] == DIGEST


async def test_a_single_model_deployment_lists_its_name_only(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client()
    body = await (await client.get("/api/models")).json()
    assert body["default"] == "default"
    (only,) = body["models"]
    assert only["name"] == "default" and only["variant"] is None and only["steps"] is None
    assert (await client.post("/api/generate", json={**BODY, "model": "default"})).status == 202
    assert kafka.sent[0].model == "default"


async def test_a_request_names_a_served_model_and_it_reaches_the_topic(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client(models=catalog())
    answer = await client.post("/api/generate", json={**BODY, "model": "xl-base"})
    assert answer.status == 202, await answer.json()
    assert (await answer.json())["model"] == "xl-base"
    default = await client.post("/api/generate", json=BODY)
    assert default.status == 202 and (await default.json())["model"] is None
    named, unnamed = kafka.sent
    assert named.model == "xl-base" and unnamed.model is None
    # A request that names no model is written as before the option existed.
    assert "model" not in json.loads(unnamed.model_dump_json())


async def test_an_unknown_model_is_refused_with_422_before_it_is_queued(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, kafka = await make_client(models=catalog())
    answer = await client.post("/api/generate", json={**BODY, "model": "xl-sft"})
    body = await answer.json()
    assert answer.status == 422
    assert body["error"]["code"] == "invalid_request" and body["error"]["field"] == "model"
    message = body["error"]["message"]
    assert "xl-sft" in message and "xl-turbo, xl-base, tiny" in message
    malformed = await client.post("/api/generate", json={**BODY, "model": "no spaces allowed"})
    assert malformed.status == 422 and (await malformed.json())["error"]["field"] == "model"
    assert kafka.sent == []


async def test_the_served_document_offers_the_served_names(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client(models=catalog())
    document = await (await client.get("/api/openapi.json")).json()
    model = document["components"]["schemas"]["GenerateBody"]["properties"]["model"]
    assert model["anyOf"][0]["enum"] == ["xl-turbo", "xl-base", "tiny"]  # a choice on the page


def test_the_openapi_document_has_the_option_and_the_listing() -> None:
    document = openapi_document("http://api.test")
    body = document["components"]["schemas"]["GenerateBody"]["properties"]["model"]
    assert "GET /api/models" in str(body)
    listing = document["paths"]["/api/models"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"]["$ref"].endswith("ServedModelList")
    info = document["components"]["schemas"]["ServedModelInfo"]["properties"]
    assert {"name", "variant", "steps", "tasks", "weightsDigest"} <= set(info)


# ------------------------------------------------------------------ older records


def test_manifests_and_requests_made_before_named_models_keep_their_bytes() -> None:
    old = canonical(manifest_for(RID, b"x"))
    written = json.loads(old)
    assert "name" not in written["model"] and "model" not in written["request"]["options"]
    assert canonical(parse_manifest(old)) == old  # still canonical: still verifies
    named = manifest_for(RID, b"x").model_copy(
        update={"model": manifest_for(RID).model.model_copy(update={"name": "tiny"})}
    )
    assert b'"name":"tiny"' in canonical(named)
    request = GenerationRequest(request_id=RID, source="http", requester="k", prompt="x")
    assert "model" not in request.model_dump(mode="json")
