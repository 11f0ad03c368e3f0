"""The topics' compatibility policy (docs/topics.md): the code never breaks the released
schemas, the checker finds each kind of breaking change and lets additive ones through, and
the exported consumer schemas accept every record the services write."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from acesteps import schemas
from acesteps.cli.main import main
from acesteps.messages import Message, encode
from tests.unit.test_messages import any_message

Schemas = dict[str, dict[str, Any]]


def test_the_code_does_not_break_the_released_schemas() -> None:
    released = schemas.load(schemas.RELEASED_DIR)
    assert released, f"no released schemas in {schemas.RELEASED_DIR}"
    assert schemas.breaking_changes(released, schemas.current()) == [], (
        "a breaking change of a .v1 topic: make it additive, or put it on a .v2 topic "
        "(docs/topics.md)"
    )


def test_released_schemas_are_consumer_schemas() -> None:
    for name, schema in schemas.load(schemas.RELEASED_DIR).items():
        assert schema["$id"] == f"urn:acesteps:schema:v1:{name}"
        Draft202012Validator.check_schema(schema)


def _props(s: Schemas, record: str = "GenerationRequest") -> dict[str, Any]:
    props: dict[str, Any] = s[record]["properties"]
    return props


def _seed(s: Schemas) -> dict[str, Any]:
    branch: dict[str, Any] = _props(s)["seed"]["anyOf"][0]
    return branch


def _chain(s: Schemas) -> dict[str, Any]:
    origin: dict[str, Any] = s["GenerationRequest"]["$defs"]["ChainOrigin"]
    return origin


Change = Callable[[Schemas], object]

BREAKING: dict[str, tuple[Change, str]] = {
    "property removed": (
        lambda s: _props(s).pop("lyrics"),
        "GenerationRequest.lyrics: property removed",
    ),
    "property newly required": (
        lambda s: s["GenerationRequest"]["required"].append("seed"),
        "GenerationRequest.seed: newly required",
    ),
    "new required property": (
        lambda s: (
            _props(s).update(mood={"type": "string"}),
            s["GenerationRequest"]["required"].append("mood"),
        ),
        "GenerationRequest.mood: newly required",
    ),
    "type changed": (
        lambda s: _props(s)["duration_s"].update(type="string"),
        "GenerationRequest.duration_s: type number -> string",
    ),
    "type narrowed": (
        lambda s: _props(s)["duration_s"].update(type="integer"),
        "GenerationRequest.duration_s: type number -> integer",
    ),
    "null no longer accepted": (
        lambda s: _props(s).update(seed=_seed(s)),
        "GenerationRequest.seed: no longer accepts type null",
    ),
    "enum value removed": (
        lambda s: _props(s)["format"].update(enum=["mp3"]),
        "GenerationRequest.format: enum values removed ['wav', 'flac']",
    ),
    "enum added": (
        lambda s: _props(s)["requester"].update(enum=["a", "b"]),
        "GenerationRequest.requester: enum ['a', 'b'] added",
    ),
    "const changed": (
        lambda s: _props(s)["schema_version"].update(const=2),
        "GenerationRequest.schema_version: const 1 -> 2",
    ),
    "pattern changed": (
        lambda s: _props(s)["request_id"].update(pattern="^0x[0-9a-f]{40}$"),
        "GenerationRequest.request_id: pattern",
    ),
    "pattern added": (
        lambda s: _props(s)["requester"].update(pattern="^0x"),
        "GenerationRequest.requester: pattern None -> '^0x'",
    ),
    "format added": (
        lambda s: _props(s)["requester"].update(format="email"),
        "GenerationRequest.requester: format None -> 'email'",
    ),
    "maxLength lowered": (
        lambda s: _props(s)["prompt"].update(maxLength=500),
        "GenerationRequest.prompt: maxLength 1000 -> 500 (stricter)",
    ),
    "minLength raised": (
        lambda s: _props(s)["prompt"].update(minLength=2),
        "GenerationRequest.prompt: minLength 1 -> 2 (stricter)",
    ),
    "maximum lowered": (
        lambda s: _props(s)["duration_s"].update(maximum=120),
        "GenerationRequest.duration_s: maximum 240 -> 120 (stricter)",
    ),
    "minimum raised": (
        lambda s: _props(s)["duration_s"].update(minimum=10),
        "GenerationRequest.duration_s: minimum 5 -> 10 (stricter)",
    ),
    "maxItems lowered": (
        lambda s: _props(s)["tags"].update(maxItems=8),
        "GenerationRequest.tags: maxItems 16 -> 8 (stricter)",
    ),
    "limit added": (
        lambda s: _props(s)["duration_s"].update(exclusiveMaximum=200),
        "GenerationRequest.duration_s: exclusiveMaximum None -> 200 (stricter)",
    ),
    "array items stricter": (
        lambda s: _props(s)["tags"]["items"].update(maxLength=10),
        "GenerationRequest.tags[]: maxLength 48 -> 10 (stricter)",
    ),
    "nested $defs stricter": (
        lambda s: _chain(s)["properties"]["block_number"].update(minimum=1),
        "GenerationRequest.chain.block_number: minimum 0 -> 1 (stricter)",
    ),
    "nested property removed": (
        lambda s: _chain(s)["properties"].pop("log_index"),
        "GenerationRequest.chain.log_index: property removed",
    ),
    "record type removed": (
        lambda s: s.pop("GenerationRevoked"),
        "GenerationRevoked: record type removed",
    ),
    "object closed": (
        lambda s: s["GenerationRequest"].update(additionalProperties=False),
        "GenerationRequest: additionalProperties closed",
    ),
    "map values stricter": (
        lambda s: _props(s, "AudioReady")["timings"]["additionalProperties"].update(minimum=0),
        "AudioReady.timings.*: minimum None -> 0 (stricter)",
    ),
}

ADDITIVE: dict[str, Change] = {
    "new optional property": lambda s: _props(s).update(mood={"type": "string"}),
    "new record type": lambda s: s.update(GenerationPaused={"type": "object"}),
    "property made optional": lambda s: s["GenerationRequest"]["required"].remove("prompt"),
    "maxLength raised": lambda s: _props(s)["prompt"].update(maxLength=2000),
    "minimum lowered": lambda s: _props(s)["duration_s"].update(minimum=1),
    "maxItems raised": lambda s: _props(s)["tags"].update(maxItems=32),
    "limit removed": lambda s: _props(s)["requester"].pop("maxLength"),
    "pattern removed": lambda s: _props(s)["request_id"].pop("pattern"),
    "enum value added": lambda s: _props(s)["format"]["enum"].append("ogg"),
    "integer widened to number": lambda s: _seed(s).update(type="number"),
    "made nullable": lambda s: _props(s).update(
        requester={"anyOf": [_props(s)["requester"], {"type": "null"}]}
    ),
    "new union branch": lambda s: _props(s)["seed"]["anyOf"].append({"type": "string"}),
    "description and default changed": lambda s: _props(s)["duration_s"].update(
        description="seconds", default=60
    ),
    "new nested optional property": lambda s: _chain(s)["properties"].update(
        note={"type": "string"}
    ),
    "$defs renamed": lambda s: _rename_def(s, "ChainOrigin", "Origin"),
}


def _rename_def(s: Schemas, old: str, new: str) -> None:
    doc = s["GenerationRequest"]
    doc["$defs"][new] = doc["$defs"].pop(old)
    text = json.dumps(doc).replace(f'"#/$defs/{old}"', f'"#/$defs/{new}"')
    s["GenerationRequest"] = json.loads(text)


@pytest.mark.parametrize(("change", "expected"), BREAKING.values(), ids=BREAKING.keys())
def test_a_breaking_change_is_reported(change: Change, expected: str) -> None:
    released = schemas.current()
    changed = copy.deepcopy(released)
    change(changed)
    found = schemas.breaking_changes(released, changed)
    assert any(line.startswith(expected) for line in found), found


@pytest.mark.parametrize("change", ADDITIVE.values(), ids=ADDITIVE.keys())
def test_an_additive_change_is_not_reported(change: Change) -> None:
    released = schemas.current()
    changed = copy.deepcopy(released)
    change(changed)
    assert changed != released
    assert schemas.breaking_changes(released, changed) == []


def test_schemas_check_reports_a_breaking_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current, released = tmp_path / "current", tmp_path / "released"
    schemas.export(current)
    schemas.export(released)
    assert main(["schemas", "check", "--dir", str(current), "--released", str(released)]) == 0
    # The released GenerationRequest had a field the code no longer has.
    path = released / "GenerationRequest.json"
    doc = json.loads(path.read_text())
    doc["properties"]["mood"] = {"type": "string"}
    path.write_text(json.dumps(doc))
    assert main(["schemas", "check", "--dir", str(current), "--released", str(released)]) == 1
    assert "breaking: GenerationRequest.mood: property removed" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["schemas", "check", "--dir", str(current), "--released", str(empty)]) == 1


VALIDATORS = {
    name: Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for name, schema in schemas.current().items()
}


@given(any_message, st.text(min_size=1, max_size=20).filter(lambda k: k.isidentifier()))
def test_every_record_fits_its_schema_and_so_does_one_with_a_new_field(
    message: Message, field: str
) -> None:
    validator = VALIDATORS[type(message).__name__]
    record = json.loads(encode(message))
    validator.validate(record)
    assert record["schema_version"] == 1
    # What a later v1 producer may add: the released schema still accepts it.
    validator.validate({field: {"added": True}, **record})
    assert not validator.is_valid({**record, "schema_version": 2})
