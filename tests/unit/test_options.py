"""One definition per request field: every surface is derived from `GenerationOptions`.

A new request option is a field of `acesteps.options.Extras`; these tests fail when any
surface (the topic message and its schema, the API body and record, the OpenAPI document, the
status fold, the command line) does not carry it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from acesteps import schemas
from acesteps.cli.main import build_parser
from acesteps.cli.options import flag_of, options_body
from acesteps.editing import EditSource
from acesteps.messages import GenerationRequest
from acesteps.options import Extras, GenerationOptions, api_name
from listener.api.models import GenerateBody, Generation, Status
from listener.api.openapi import openapi_document
from listener.api.updates import apply

OPTIONS = list(GenerationOptions.model_fields)
RID = "0x" + "ab" * 32

# A value of each option that differs from its default.
SAMPLE: dict[str, object] = {
    "prompt": "warm lo-fi piano",
    "duration_s": 12.5,
    "format": "wav",
    "lyrics": "[verse]\nla la",
    "tags": ("piano", "rain"),
    "seed": 7,
    "model": "tiny-b",
    "bpm": 96,
    "key": "F# minor",
    "time_signature": 3,
    "vocal_language": "fr",
    "instrumental": True,
    "preset": "lofi",
    "variations": 3,
    "task": "repaint",
    "source_track": "0x" + "cd" * 32,
    "source_upload": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
    "repaint_start": 2.5,
    "repaint_end": 8.0,
    "extend_before": 4.0,
    "extend_after": 6.5,
    "cover_strength": 0.25,
    "stem": "drums",
}
EXCLUDES = {"instrumental": "lyrics"}
"""Options whose value here rules another out: an instrumental request has no lyrics."""

_REPAINT = {"task": "repaint", "source_track": SAMPLE["source_track"]}
_REPAINT |= {"repaint_start": 2.5, "repaint_end": 8.0}
EDITS: dict[str, dict[str, object]] = {
    name: _REPAINT for name in ("task", "source_track", "repaint_start", "repaint_end")
}
EDITS |= {
    "source_upload": {"task": "cover", "source_upload": SAMPLE["source_upload"]},
    "cover_strength": {"task": "cover", "source_track": SAMPLE["source_track"]}
    | {"cover_strength": 0.25},
    "extend_before": {"task": "extend", "source_track": SAMPLE["source_track"]}
    | {"extend_before": 4.0},
    "extend_after": {"task": "extend", "source_upload": SAMPLE["source_upload"]}
    | {"extend_after": 6.5},
    "stem": {"task": "extract", "source_track": SAMPLE["source_track"], "stem": "drums"},
}
"""The edit fields go together (acesteps.editing): one edit that carries each."""


def sample(name: str) -> dict[str, object]:
    """SAMPLE as one valid request that carries ``name``: an option of EXCLUDES only when it
    is ``name``, and then without what it rules out; the edit fields of one edit only when
    ``name`` is one of them."""
    drop = {EXCLUDES[name]} if name in EXCLUDES else set(EXCLUDES)
    options = {k: v for k, v in SAMPLE.items() if k not in drop and k not in EDITS}
    return options | EDITS.get(name, {})


def request_of(name: str) -> GenerationRequest:
    """The topic message of ``sample(name)``, with the source an API would resolve."""
    options = sample(name)
    source = None
    if "source_track" in options:
        source = EditSource(
            kind="track",
            request_id=str(options["source_track"]),
            cid=str(SAMPLE["source_upload"]),
            audio_hash="0x" + "ee" * 32,
            duration_s=20.0,
        )
    elif "source_upload" in options:
        source = EditSource(
            kind="upload",
            cid=str(options["source_upload"]),
            audio_hash="0x" + "ee" * 32,
            duration_s=20.0,
        )
    return GenerationRequest(
        request_id=RID, source="http", requester="k", edit_source=source, **options
    )


def test_the_sample_covers_every_option() -> None:
    # A new option needs a sample value here, which the tests below then carry everywhere.
    assert set(SAMPLE) == set(OPTIONS)
    for name, field in GenerationOptions.model_fields.items():
        assert name in sample(name)
        carried = GenerationOptions.model_validate(sample(name))
        assert getattr(carried, name) != field.default, name


def test_extras_are_optional_for_backward_compatibility() -> None:
    # Records written before an option existed must still validate: every extra has a default.
    for name, field in Extras.model_fields.items():
        assert not field.is_required(), name
    GenerationRequest(request_id=RID, source="http", requester="k", prompt="x")


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_is_on_the_topic_and_in_its_schema(name: str) -> None:
    assert name in GenerationRequest.model_fields
    schema = json.loads(schemas.render()["GenerationRequest.json"])
    assert name in schema["properties"]
    request = request_of(name)
    again = GenerationRequest.model_validate_json(request.model_dump_json())
    assert getattr(again, name) == SAMPLE[name]


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_is_in_the_api_and_its_openapi_document(name: str) -> None:
    document = openapi_document("http://api.test")["components"]["schemas"]
    assert api_name(name) in document["GenerateBody"]["properties"]
    assert api_name(name) in document["Generation"]["properties"]
    body = GenerateBody.model_validate(
        {api_name(k): list(v) if isinstance(v, tuple) else v for k, v in sample(name).items()}
    )
    assert getattr(body, name) == SAMPLE[name]


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_reaches_the_status_record(name: str) -> None:
    request = request_of(name)
    record = apply(None, request)
    assert isinstance(record, Generation) and record.status is Status.QUEUED
    public = record.public("http://api.test")
    value = public[api_name(name)]
    assert (tuple(value) if isinstance(value, list) else value) == SAMPLE[name]


@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_is_on_the_command_line(name: str) -> None:
    (generate,) = [
        action.choices["generate"]
        for action in build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    ]
    help_text = generate.format_help()
    required = GenerationOptions.model_fields[name].is_required()
    assert (name if required else flag_of(name)) in help_text
    argv = ["generate"]
    for key, value in sample(name).items():
        shown = ",".join(value) if isinstance(value, tuple) else str(value)
        if GenerationOptions.model_fields[key].is_required():
            argv += [shown]
        elif isinstance(value, bool):  # a flag: --x or --no-x
            argv += [flag_of(key) if value else flag_of(key).replace("--", "--no-", 1)]
        else:
            argv += [flag_of(key), shown]
    sent = options_body(build_parser().parse_args(argv))
    value = sent[api_name(name)]
    assert (tuple(value) if isinstance(value, list) else value) == SAMPLE[name]


def test_the_api_body_refuses_what_the_topic_refuses() -> None:
    for bad in ({"prompt": " "}, {"prompt": "x", "duration": 4}, {"prompt": "x", "seed": -1}):
        with pytest.raises(ValidationError):
            GenerateBody.model_validate(bad)
        with pytest.raises(ValidationError):
            GenerationRequest.model_validate(
                {
                    "request_id": RID,
                    "source": "http",
                    "requester": "k",
                    "requested_at": datetime.now(UTC).isoformat(),
                    **{("duration_s" if k == "duration" else k): v for k, v in bad.items()},
                }
            )
