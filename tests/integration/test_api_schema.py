"""Property-based requests from the API's own OpenAPI document (schemathesis), against the
real service: no 500s, and every answer matches the document (status code, content type,
schema); valid input is accepted and invalid input refused.

Schemathesis' pytest plugin does not load under pytest 9, so each operation's strategies
drive a plain hypothesis test here, positive (valid by the document) and negative cases.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from acesteps.settings import CommonSettings
from tests.integration.pipeline import running_pipeline

EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(stack: CommonSettings) -> Iterator[schemathesis.BaseSchema]:
    # Submissions answer at once (no waiting on generation) and no budget runs out.
    with running_pipeline(
        stack,
        ACESTEPS_API_WAIT_S="0",
        ACESTEPS_API_GENERATE_PER_MINUTE="1000000",
        ACESTEPS_API_GENERATE_BURST="1000000",
        ACESTEPS_API_READ_PER_MINUTE="1000000",
        ACESTEPS_API_READ_BURST="1000000",
    ) as pipeline:
        yield schemathesis.openapi.from_url(f"{pipeline.api_url}/api/openapi.json")


OPERATIONS = [
    ("POST", "/api/generate"),
    ("GET", "/api/generations"),
    ("GET", "/api/generations/{id}"),
    ("GET", "/api/generations/{id}/audio"),
    ("GET", "/api/generations/{id}/events"),
    ("GET", "/api/generations/{id}/verify"),
    ("GET", "/api/generations/{id}/manifest"),
    ("GET", "/healthz"),
]


def test_the_document_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (path == "/healthz" and mode is GenerationMode.NEGATIVE)  # it takes no input
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
        case.call_and_validate(timeout=30)

    check()
