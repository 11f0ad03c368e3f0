"""Property-based requests from the API's own OpenAPI document (schemathesis), against the
real service: no 500s, and every answer matches the document (status code, content type,
schema); valid input is accepted and invalid input refused.

Schemathesis' pytest plugin does not load under pytest 9, so each operation's strategies
drive a plain hypothesis test here, positive (valid by the document) and negative cases.

The listener runs as `tests.integration.webhook_worker`: webhook hosts resolve from a table,
never through DNS, and webhooks connect to 127.0.0.1 only. Whether a webhook URL is accepted
depends on what its host resolves to, which no document can say, so a positive case that
asks for a webhook gets one the server accepts (`HOOK`, a closed port on 127.0.0.1). Likewise
a positive case's deadline (`deadline`, `Cancel-After`) is moved to an hour or five minutes
ahead: it must lie in the future and within a week of its arrival, and an instrumental
positive case gets no lyrics.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from acesteps.options import Extras, api_name
from acesteps.settings import CommonSettings
from tests.integration.pipeline import running_pipeline, wait_healthy
from tests.integration.services import ServiceProcess

EXAMPLES = 40
HOOK = "http://127.0.0.1:9/hook"


def _silence(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(round(seconds * rate), np.int16), rate, format="WAV")
    return out.getvalue()


EDIT_FIELDS = [
    api_name(name)
    for name in Extras.model_fields
    if name == "task" or name.startswith(("source_", "repaint_", "extend_", "cover_", "stem"))
]
WAV = _silence(6.0)
"""An upload the API accepts (it is pinned once: the same bytes every time)."""


@pytest.fixture(scope="module")
def api_schema(stack: CommonSettings) -> Iterator[schemathesis.BaseSchema]:
    # Submissions answer at once (no waiting on generation) and no budget runs out.
    with running_pipeline(
        stack,
        start=("generator", "publisher"),
        ACESTEPS_API_WAIT_S="0",
        ACESTEPS_API_GENERATE_PER_MINUTE="1000000",
        ACESTEPS_API_GENERATE_BURST="1000000",
        ACESTEPS_API_READ_PER_MINUTE="1000000",
        ACESTEPS_API_READ_BURST="1000000",
        ACESTEPS_API_WEBHOOK_ALLOW_HTTP="true",
        ACESTEPS_API_WEBHOOK_ALLOW_NETS="127.0.0.1/32",
    ) as pipeline:
        hosts, violations = pipeline.log_dir / "hosts.json", pipeline.log_dir / "violations"
        hosts.write_text("{}")
        env = {
            **pipeline.env,
            **pipeline.service_env["listener"],
            "WEBHOOKTEST_HOSTS": str(hosts),
            "WEBHOOKTEST_VIOLATIONS": str(violations),
        }
        log = pipeline.log_dir / "listener.log"
        listener = ServiceProcess("tests.integration.webhook_worker", env, log)
        pipeline.services["listener"] = listener.start()
        wait_healthy(pipeline.api_url, pipeline)
        yield schemathesis.openapi.from_url(f"{pipeline.api_url}/api/openapi.json")
    assert not violations.exists(), violations.read_text()


def _completed_and_failed(api_schema: schemathesis.BaseSchema) -> tuple[str, str]:
    """A request whose track is published and one that failed (a prompt the policy refuses)."""
    generate = api_schema["/api/generate"]["POST"]
    read = api_schema["/api/generations/{id}"]["GET"]
    ids = []
    for prompt in ("a calm piano piece", "in the style of Taylor Swift"):
        answer = generate.Case(body={"prompt": prompt, "duration": 5}).call(timeout=30)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    settled = {"completed": True, "failed": False}  # status -> final
    deadline = time.monotonic() + 120
    for rid, status in zip(ids, settled, strict=True):
        while (record := read.Case(path_parameters={"id": rid}).call().json()).get(
            "status"
        ) != status or record["final"] is not settled[status]:
            assert time.monotonic() < deadline, record
            time.sleep(0.3)
    return ids[0], ids[1]


def test_what_a_finished_request_answers_conforms_too(api_schema: schemathesis.BaseSchema) -> None:
    """The answers random cases rarely reach: ranges, conditional requests, HEAD, a settled
    event stream, the verdict, the manifest, and 410 for a request that has no track. First
    in the module: the random cases below fill the generator's queue."""
    done, failed = _completed_and_failed(api_schema)
    audio = api_schema["/api/generations/{id}/audio"]
    headers = audio["GET"].Case(path_parameters={"id": done}).call().headers
    (etag,) = {k.lower(): v for k, v in headers.items()}["etag"]  # one value per header
    cases = [
        (audio["GET"], done, {"Range": "bytes=0-99"}, 206),
        (audio["GET"], done, {"If-None-Match": etag}, 304),
        (audio["HEAD"], done, {}, 200),
        (api_schema["/api/generations/{id}/events"]["GET"], done, {"Last-Event-ID": "5"}, 204),
        (api_schema["/api/generations/{id}/verify"]["GET"], done, {}, 200),
        (api_schema["/api/generations/{id}/manifest"]["GET"], done, {}, 200),
        (api_schema["/api/generations/{id}/cancel"]["POST"], done, {}, 409),
        (audio["GET"], failed, {}, 410),
        (api_schema["/api/generations/{id}/verify"]["GET"], failed, {}, 410),
    ]
    for operation, rid, headers, status in cases:
        case = operation.Case(path_parameters={"id": rid}, headers=headers)
        answer = case.call(timeout=30)
        assert answer.status_code == status, (operation.path, headers, answer.text)
        case.validate_response(answer)


OPERATIONS = [
    ("POST", "/api/generate"),
    ("GET", "/api/generations"),
    ("GET", "/api/generations/{id}"),
    ("GET", "/api/generations/{id}/audio"),
    ("HEAD", "/api/generations/{id}/audio"),
    ("GET", "/api/generations/{id}/events"),
    ("POST", "/api/generations/{id}/cancel"),
    ("POST", "/api/uploads"),
    ("GET", "/api/generations/{id}/verify"),
    ("GET", "/api/generations/{id}/manifest"),
    ("GET", "/api/generations/{id}/webhooks"),
    ("GET", "/api/webhooks/secret"),
    ("GET", "/api/contract"),
    ("GET", "/api/models"),
    ("GET", "/api/presets"),
    ("GET", "/api/verify-config"),
    ("GET", "/healthz"),
]
NO_INPUT = (
    "/healthz",
    "/api/webhooks/secret",
    "/api/contract",
    "/api/models",
    "/api/presets",
    "/api/verify-config",
)


def test_the_document_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (path in NO_INPUT and mode is GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_conforms_to_the_document(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        # A key generated twice with two bodies is a (correct) 422 that depends on the order
        # of the cases; a fresh key per case keeps each case independent.
        if case.headers and "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            if {"webhook", "webhookEvents"} & case.body.keys():
                case.body["webhook"] = HOOK
            # A deadline must lie ahead, within a week, of the time it arrives: a bound the
            # document states in words only.
            if "deadline" in case.body:
                case.body["deadline"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            # An instrumental request carries no lyrics (stated in the field's description).
            if case.body.get("instrumental") is True:
                case.body["lyrics"] = ""
            # An edit's source must be a finished track or an upload of this service, which
            # no document can say: a positive case edits nothing (tests/unit/test_api_edits.py).
            if "prompt" in case.body:
                for name in EDIT_FIELDS:
                    case.body.pop(name, None)
            # An upload must decode as WAV, FLAC or MP3 (stated in the field's description).
            if "file" in case.body:
                case.body["file"] = WAV
        if mode is GenerationMode.POSITIVE and case.headers and "Cancel-After" in case.headers:
            case.headers["Cancel-After"] = "5m"
        case.call_and_validate(timeout=30)

    check()
