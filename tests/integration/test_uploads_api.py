"""``POST /api/uploads`` on the real stack: the listener's API pins what it accepts on the shared
Kubo, under the CID `acesteps.ipfs.unixfs.cid_of_bytes` computes and with the keccak256 of the
bytes as its audioHash, and pins nothing it refuses (too large, not audio, not WAV/FLAC/MP3,
too long); an edit of an upload (``sourceUpload``) is queued with the source its record and
message carry, and a CID never uploaded is refused. No generator runs: the edit itself is
tests/integration/test_edits.py's.

Every file is made here with fresh noise, so that no earlier run can have pinned it.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.messages import GenerationRequest
from acesteps.settings import CommonSettings
from acesteps.topics import Topics
from tests.integration.kafkaread import read_all
from tests.integration.listening import of_type
from tests.integration.pipeline import Pipeline, running_pipeline

LIMIT_MB = 1


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(
        stack, start=("listener",), ACESTEPS_API_UPLOAD_MAX_MB=str(LIMIT_MB)
    ) as running:
        yield running


@pytest.fixture
async def kubo(stack: CommonSettings) -> AsyncIterator[KuboClient]:
    async with KuboClient(stack.ipfs_api_url) as client:
        yield client


def audio(
    fmt: str, seconds: float, rate: int = 8000, channels: int = 1, loud: bool = True
) -> bytes:
    """``seconds`` of noise (else of silence but for a few samples: a small FLAC however long)."""
    rng = np.random.default_rng()
    samples = np.zeros((round(seconds * rate), channels), np.int16)
    if loud:
        samples[:] = rng.integers(-8000, 8000, samples.shape)
    else:
        samples[:16] = rng.integers(-8000, 8000, (16, channels))
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt)
    return out.getvalue()


async def post_file(api: str, data: bytes, name: str = "source") -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        http.post(f"{api}/api/uploads", data=form) as answer,
    ):
        return answer.status, await answer.json(content_type=None)


async def test_a_wav_and_a_flac_are_pinned_under_their_cid(
    pipeline: Pipeline, kubo: KuboClient
) -> None:
    for fmt, channels in (("WAV", 1), ("FLAC", 2)):
        data = audio(fmt, 7.5, rate=16000, channels=channels)
        cid = cid_of_bytes(data)
        assert not await kubo.pin_ls(cid)
        status, body = await post_file(pipeline.api_url, data, f"song.{fmt.lower()}")
        assert status == 201, body
        assert body == {
            "cid": cid,
            "audioHash": keccak256_hex(data),
            "duration": 7.5,
            "sampleRate": 16000,
            "channels": channels,
            "format": fmt.lower(),
            "sizeBytes": len(data),
        }
        assert await kubo.pin_ls(cid) and await kubo.cat(cid) == data
        # The same bytes again: the same answer.
        assert await post_file(pipeline.api_url, data) == (201, body)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        # Valid audio, but over the limit: refused before it is decoded.
        (lambda: audio("WAV", 40, rate=16000), 413, "upload_too_large"),
        # A zero first byte: no format's signature (nor an MPEG frame's sync) by chance.
        (lambda: b"\0" + np.random.default_rng().bytes(20_000), 415, "unsupported_audio"),
        (
            lambda: f"a text file, not audio: {uuid.uuid4()}\n".encode() * 200,
            415,
            "unsupported_audio",
        ),
        (lambda: audio("OGG", 6), 415, "unsupported_audio"),
        (lambda: audio("FLAC", 241, loud=False), 422, "upload_too_long"),
    ],
    ids=["too-large", "random-bytes", "text", "ogg", "241-s"],
)
async def test_what_is_refused_is_not_pinned(
    pipeline: Pipeline, kubo: KuboClient, make: Any, status: int, code: str
) -> None:
    data = make()
    status_got, body = await post_file(pipeline.api_url, data)
    assert (status_got, body["error"]["code"]) == (status, code), body
    assert body["error"]["field"] == "file"
    if code == "upload_too_large":
        assert len(data) > LIMIT_MB * 2**20 and f"{LIMIT_MB} MiB" in body["error"]["message"]
    if code == "unsupported_audio":
        assert "WAV, FLAC or MP3" in body["error"]["message"]
    if code == "upload_too_long":
        assert "240 s" in body["error"]["message"] and len(data) < LIMIT_MB * 2**20
    assert not await kubo.pin_ls(cid_of_bytes(data))


async def test_an_edit_of_an_upload_is_queued_with_its_source(
    pipeline: Pipeline, stack: CommonSettings
) -> None:
    data = audio("FLAC", 12.25, rate=16000, channels=2)
    status, uploaded = await post_file(pipeline.api_url, data, "take.flac")
    assert status == 201, uploaded
    api = pipeline.api_url
    edit = {"prompt": "a calm piano outro", "task": "extend", "extendAfter": 8}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.post(
            f"{api}/api/generate?wait=0", json={**edit, "sourceUpload": uploaded["cid"]}
        ) as answer:
            record = await answer.json()
            assert answer.status == 202, record
        never = cid_of_bytes(audio("WAV", 6))  # audio, but never uploaded
        async with http.post(
            f"{api}/api/generate?wait=0", json={**edit, "sourceUpload": never}
        ) as answer:
            refused = await answer.json()
            assert answer.status == 422, refused
    assert refused["error"]["field"] == "sourceUpload"
    assert "not an upload of this service" in refused["error"]["message"]
    source = EditSource(
        kind="upload", cid=uploaded["cid"], audio_hash=keccak256_hex(data), duration_s=12.25
    )
    assert record["duration"] == 20.25
    assert record["editSource"] == {
        "kind": "upload",
        "cid": source.cid,
        "audioHash": source.audio_hash,
        "duration": 12.25,
    }
    queued = of_type(
        await read_all(stack.kafka_bootstrap, Topics(pipeline.prefix).requests), GenerationRequest
    )
    # The edit, with its source (the outbox may send it twice); the refused one never.
    assert {(r.request_id, r.edit_source, r.duration_s) for r in queued} == {
        (record["id"], source, 20.25)
    }
