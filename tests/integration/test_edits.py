"""Edits on the real stack (API, Kafka, generator, publisher, IPFS, anvil).

A WAV track is made, then repainted and extended by request id, and an uploaded FLAC is
extended: each edit ends ``completed`` with a track that verifies against the chain (MATCH),
whose file keeps the source's samples outside what was regenerated, and whose registered
manifest names its source. A cover on the tiny checkpoint ends ``failed`` with the reason.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from acesteps.hashing import keccak256_hex
from acesteps.settings import CommonSettings
from tests.integration.pipeline import Pipeline, final_record, http_json, running_pipeline

RATE = 44_100


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        yield running


async def _audio(http: aiohttp.ClientSession, api: str, rid: str) -> bytes:
    async with http.get(f"{api}/api/generations/{rid}/audio") as answer:
        assert answer.status == 200
        return await answer.read()


def _samples(data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE
    return np.asarray(samples)


async def _edit(
    http: aiohttp.ClientSession, api: str, body: dict[str, Any]
) -> tuple[dict[str, Any], bytes]:
    status, record = await http_json(http, f"{api}/api/generate?wait=150", method="POST", json=body)
    assert status in (200, 202), record
    record = await final_record(http, f"{api}/api/generations/{record['id']}")
    assert record["status"] == "completed", record
    data = await _audio(http, api, record["id"])
    assert keccak256_hex(data) == record["audioHash"]
    status, verdict = await http_json(http, f"{api}/api/generations/{record['id']}/verify")
    assert status == 200 and verdict["status"] == "MATCH", verdict
    return record, data


async def test_a_track_is_repainted_and_extended_and_each_edit_verifies(
    pipeline: Pipeline,
) -> None:
    api = pipeline.api_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        body = {"prompt": "a calm piano piece", "duration": 6, "seed": 5, "format": "wav"}
        status, source = await http_json(
            http, f"{api}/api/generate?wait=150", method="POST", json=body
        )
        assert status == 200 and source["status"] == "completed", (source, pipeline.logs())
        original = _samples(await _audio(http, api, source["id"]))

        common = {"prompt": "drums and bass", "seed": 9, "format": "wav"}
        common["sourceTrack"] = source["id"]
        repaint = common | {"task": "repaint", "repaintStart": 2, "repaintEnd": 4}
        record, data = await _edit(http, api, repaint)
        got = _samples(data)
        assert got.shape == original.shape and record["duration"] == 6
        a, b = 2 * RATE, 4 * RATE
        assert np.array_equal(got[:a], original[:a]) and np.array_equal(got[b:], original[b:])
        assert not np.array_equal(got[a:b], original[a:b])
        assert record["editSource"]["requestId"] == source["id"]
        assert record["editSource"]["audioHash"] == source["audioHash"]
        status, verdict = await http_json(http, f"{api}/api/generations/{record['id']}/verify")
        assert verdict["editSourceId"] == source["id"] and verdict["editSourceMatches"] is True

        extend = common | {"task": "extend", "extendAfter": 3}
        record, data = await _edit(http, api, extend)
        got = _samples(data)
        assert record["duration"] == 9 and got.shape[0] == 9 * RATE
        assert np.array_equal(got[: 6 * RATE], original)


async def test_an_uploaded_file_is_extended_and_a_cover_is_refused_with_its_reason(
    pipeline: Pipeline,
) -> None:
    api = pipeline.api_url
    tone = 0.2 * np.sin(np.arange(RATE * 5) * 2 * np.pi * 220 / RATE)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone, tone], axis=1), RATE, format="FLAC", subtype="PCM_16")
    flac = buffer.getvalue()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        form = aiohttp.FormData()
        form.add_field("file", flac, filename="tone.flac", content_type="audio/flac")
        status, upload = await http_json(http, f"{api}/api/uploads", method="POST", data=form)
        assert status == 201, upload
        assert upload["audioHash"] == keccak256_hex(flac)

        body = {"prompt": "a cello answers", "seed": 2, "format": "flac"}
        body |= {"task": "extend", "extendBefore": 2, "sourceUpload": upload["cid"]}
        record, data = await _edit(http, api, body)
        got = _samples(data)
        assert got.shape[0] == 7 * RATE
        assert np.array_equal(got[2 * RATE :], _samples(flac))
        assert record["editSource"] == {
            "kind": "upload",
            "cid": upload["cid"],
            "audioHash": upload["audioHash"],
            "duration": 5.0,
        }

        cover = {"prompt": "as a jazz trio", "task": "cover", "sourceUpload": upload["cid"]}
        status, record = await http_json(
            http, f"{api}/api/generate?wait=150", method="POST", json=cover
        )
        assert status in (200, 202), record
        record = await final_record(http, f"{api}/api/generations/{record['id']}")
        assert record["status"] == "failed", record
        assert record["error"]["code"] == "task_unsupported", record
        assert "cannot make covers" in record["error"]["message"], record
