"""Schema registry mode without a registry: the wire format, and reading both forms."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acesteps.errors import InvalidRecordError
from acesteps.kafka import schema_registry as registry
from acesteps.kafka.records import InRecord, OutRecord, dead_letter, decode_value
from acesteps.messages import GenerationFailed, GenerationRequest, decode, encode, json_of

RID = "0x" + "ab" * 32
REQUEST = GenerationRequest(request_id=RID, source="http", requester="k", prompt="rain")


@pytest.fixture
def mode_on(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """As after `registry.configure` against a registry that gave these ids."""
    ids = {"GenerationRequest": 7, "GenerationFailed": 0x01020304}
    monkeypatch.setattr(registry, "_ids", dict(ids))
    return ids


@given(st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_frame_is_magic_byte_id_and_payload(schema_id: int, payload: bytes) -> None:
    framed = registry.frame(schema_id, payload)
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == schema_id
    assert json_of(framed) == payload


def test_plain_json_by_default() -> None:
    assert registry.registered() == {}
    assert registry.encode_value(REQUEST) == encode(REQUEST)
    assert OutRecord.message("t", RID, REQUEST).value == encode(REQUEST)


def test_framed_when_on_and_read_in_both_forms(mode_on: dict[str, int]) -> None:
    out = OutRecord.message("t.requests.v1", RID, REQUEST)
    assert out.value == b"\x00\x00\x00\x00\x07" + encode(REQUEST)
    assert dict(out.headers)["acesteps-type"] == b"GenerationRequest"
    for value in (out.value, encode(REQUEST)):
        assert decode(GenerationRequest, value) == REQUEST
        record = InRecord("t.requests.v1", 0, 0, RID.encode(), value, out.headers)
        assert decode_value(GenerationRequest, record) == REQUEST


def test_dead_letters_are_framed_too(mode_on: dict[str, int]) -> None:
    poison = InRecord("t.requests.v1", 1, 5, RID.encode(), b"{not json")
    out = dead_letter(
        poison,
        stage="generator",
        code="invalid_record",
        message="bad",
        failures_topic="t.failures.v1",
        deadletter_topic="t.deadletter.v1",
    )
    assert out.value is not None and out.value[:5] == b"\x00\x01\x02\x03\x04"
    assert decode(GenerationFailed, out.value).request_id == RID


def test_a_truncated_header_is_an_invalid_record() -> None:
    with pytest.raises(ValueError, match="header of 3 bytes"):
        decode(GenerationRequest, b"\x00\x00\x07")
    record = InRecord("t", 0, 0, RID.encode(), b"\x00\x00\x00\x00\x07{}")
    with pytest.raises(InvalidRecordError):
        decode_value(GenerationRequest, record)
    # A JSON text never starts with a zero byte: plain values are read as before.
    assert json.loads(json_of(b' {"a": 1}')) == {"a": 1}


def test_credentials_in_the_url_become_basic_auth() -> None:
    client = registry.SchemaRegistry("https://key:s%3Acret@registry.example:8443/ccompat/")
    assert client.url == "https://registry.example:8443/ccompat"
    assert registry.SchemaRegistry("http://127.0.0.1:18081/apis/ccompat/v7")._auth is None
    assert client._auth == base64.b64encode(b"key:s:cret").decode()
    assert registry.subject("AudioReady") == "acesteps.AudioReady"
