"""The topic messages: JSON round trips, strictness, limits, and the exported schemas."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from acesteps import schemas
from acesteps.messages import (
    MAX_CHUNK_BYTES,
    MESSAGE_TYPES,
    AudioChunk,
    AudioReady,
    ChainOrigin,
    GenerationFailed,
    GenerationRequest,
    ListenerCheckpoint,
    TrackPublished,
    decode,
    encode,
    headers_for,
)
from acesteps.options import MAX_DURATION_S, MAX_PROMPT_CHARS, MIN_DURATION_S

hex32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
address = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
cid = st.text(alphabet=string.ascii_lowercase + "234567", min_size=58, max_size=58).map(
    lambda s: "b" + s
)
# Printable text of any script, no control characters (the models refuse those).
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200
).filter(lambda s: s.strip())

origins = st.builds(
    ChainOrigin,
    chain_id=st.integers(1, 2**31),
    contract=address,
    block_number=st.integers(0, 2**40),
    block_hash=hex32,
    tx_hash=hex32,
    log_index=st.integers(0, 10_000),
)


@st.composite
def requests(draw: st.DrawFn) -> GenerationRequest:
    source = draw(st.sampled_from(["chain", "http"]))
    return GenerationRequest(
        request_id=draw(hex32),
        source=source,
        prompt=draw(text),
        lyrics=draw(st.text(max_size=300).filter(lambda s: s.isprintable() or s == "")),
        tags=tuple(draw(st.lists(text.map(lambda s: s[:48]), max_size=5))),
        duration_s=draw(st.floats(MIN_DURATION_S, MAX_DURATION_S)),
        format=draw(st.sampled_from(["mp3", "wav", "flac"])),
        seed=draw(st.none() | st.integers(0, 2**32 - 1)),
        requester=draw(address),
        chain=draw(origins) if source == "chain" else None,
    )


ready = st.builds(
    AudioReady,
    request_id=hex32,
    audio_hash=hex32,
    cid=cid,
    size_bytes=st.integers(0, 10**9),
    chunks=st.integers(1, 5000),
    format=st.sampled_from(["mp3", "wav", "flac"]),
    sample_rate=st.just(44_100),
    channels=st.just(2),
    duration_s=st.floats(0.1, 240),
    seed=st.integers(0, 2**32 - 1),
    model_id=text,
    timings=st.dictionaries(st.sampled_from(["model", "encode", "hash"]), st.floats(0, 1e4)),
)
published = st.builds(
    TrackPublished,
    request_id=hex32,
    audio_hash=hex32,
    cid=cid,
    urls=st.tuples(st.just("ipfs://x")),
    chain_id=st.integers(1, 10**6),
    contract=address,
    tx_hash=hex32,
    block_number=st.integers(0, 10**9),
)
failed = st.builds(
    GenerationFailed,
    request_id=hex32,
    stage=st.sampled_from(["listener", "api", "generator", "publisher"]),
    code=st.from_regex(r"^[a-z][a-z0-9_]{0,20}$", fullmatch=True),
    message=st.text(max_size=500),
    source=st.none() | st.sampled_from(["chain", "http"]),
)
checkpoints = st.builds(
    ListenerCheckpoint,
    chain_id=st.integers(1, 10**6),
    contract=address,
    block_number=st.integers(0, 10**9),
    block_hash=hex32,
)
any_message = requests() | ready | published | failed | checkpoints


@given(any_message)
def test_json_round_trip(message) -> None:  # type: ignore[no-untyped-def]
    value = encode(message)
    assert decode(type(message), value) == message
    ((_name, header),) = headers_for(message)
    assert MESSAGE_TYPES[header.decode()] is type(message)


@given(any_message, st.text(min_size=1, max_size=20).filter(lambda k: k.isidentifier()))
def test_unknown_fields_rejected(message, field) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(encode(message))
    if field in data or field in type(message).model_fields:  # unset options are left out
        return
    data[field] = 1
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        decode(type(message), json.dumps(data).encode())


@given(requests())
def test_frozen(request_: GenerationRequest) -> None:
    with pytest.raises(ValidationError):
        request_.prompt = "changed"  # type: ignore[misc]


def _request(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "request_id": "0x" + "ab" * 32,
        "source": "http",
        "prompt": "chill lofi beat with rain sounds",
        "duration_s": 30,
        "requester": "anonymous",
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"duration_s": MIN_DURATION_S - 0.01}, "greater than or equal"),
        ({"duration_s": MAX_DURATION_S + 1}, "less than or equal"),
        ({"prompt": ""}, "at least 1 character"),
        ({"prompt": "   "}, "at least 1 character"),  # stripped first
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "at most"),
        ({"prompt": "bad\x00byte"}, "control characters"),
        ({"format": "ogg"}, "'mp3', 'wav' or 'flac'"),
        ({"seed": -1}, "greater than or equal"),
        ({"seed": 2**32}, "less than or equal"),
        ({"request_id": "0x" + "AB" * 32}, "should match pattern"),
        ({"request_id": "0x1234"}, "should match pattern"),
        ({"source": "chain"}, "chain origin is required"),
        ({"schema_version": 2}, "schema_version 2 is not 1"),
        ({"tags": ["x"] * 17}, "at most 16"),
    ],
)
def test_request_limits(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        GenerationRequest.model_validate(_request(**changes))


def test_lyrics_keep_newlines() -> None:
    req = GenerationRequest.model_validate(_request(lyrics="[verse]\nline one\n\tline two"))
    assert req.lyrics.count("\n") == 2


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        decode(GenerationRequest, b"\xff\xfe not json")
    with pytest.raises(ValueError, match="tombstone"):
        decode(GenerationRequest, None)


@given(st.binary(max_size=3 * 1024), st.integers(1, 1024))
def test_chunks_reassemble(data: bytes, size: int) -> None:
    rid = "0x" + "cd" * 32
    chunks = AudioChunk.split(rid, data, size)
    assert all(len(c.data) <= size for c in chunks)
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    back = [AudioChunk.from_record(c.headers(), c.data) for c in chunks]
    assert b"".join(c.data for c in back) == data
    assert {c.total for c in back} == {len(chunks)}


def test_chunk_limits() -> None:
    rid = "0x" + "cd" * 32
    with pytest.raises(ValidationError):
        AudioChunk(request_id=rid, sequence=0, total=1, data=b"x" * (MAX_CHUNK_BYTES + 1))
    with pytest.raises(ValidationError, match="not below total"):
        AudioChunk(request_id=rid, sequence=1, total=1, data=b"")
    with pytest.raises(ValueError, match="malformed"):
        AudioChunk.from_record([("acesteps-type", b"AudioChunk")], b"")


def test_exported_schemas_are_current() -> None:
    assert schemas.stale() == [], "run `acesteps schemas export` and commit schemas/"


def test_schema_files_are_consumer_schemas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schemas.export(tmp_path)
    for path in tmp_path.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", path.name
        assert schema["$id"] == f"urn:acesteps:schema:v1:{path.stem}", path.name
        # Open objects: a validator holding these schemas accepts an additive change.
        assert '"additionalProperties": false' not in path.read_text(), path.name
        assert "schema_version" in schema["required"], path.name
        assert schema["properties"]["schema_version"]["const"] == 1, path.name
    (tmp_path / "AudioReady.json").write_text("{}")
    assert schemas.stale(tmp_path) == ["AudioReady.json"]
