"""Edits over HTTP, in-process (`tests.unit.apiapp`): ``POST /api/uploads`` pins an audio file
it decodes (`listener.api.uploads`), and ``POST /api/generate`` with a ``task`` resolves its
source (`listener.api.editsource`) before anything is stored: a finished track checked against
the chain (a fake verifier here), or an upload pinned on the API's Kubo (a fake one here; the
real one is tests/integration/test_uploads_api.py); what cannot be edited is refused with 422
naming the field, and nothing is queued."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import AddResult, KuboUnavailable
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.messages import GenerationFailed
from acesteps.models import ModelsSettings
from acesteps.verify import Status as VerdictStatus
from acesteps.verify import Verdict
from tests.factories import track_published
from tests.unit.apiapp import BODY, KEYS, bearer

CHAIN_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
"""The registered CID the fake chain answers (not the record's: the source is the chain's)."""
CHAIN_HASH = "0x" + "c4" * 32
TRACK_S = 20.0


@dataclass
class FakeVerifier:
    status: VerdictStatus = VerdictStatus.MATCH
    reason: str = "audioHash and CID equal the registered ones"
    asked: list[str] = field(default_factory=list)

    async def __call__(self, request_id: str) -> Verdict:
        self.asked.append(request_id)
        registered = self.status is not VerdictStatus.UNKNOWN
        return Verdict(
            self.status,
            self.reason,
            request_id,
            request_id=request_id,
            onchain_cid=CHAIN_CID if registered else None,
            onchain_audio_hash=CHAIN_HASH if registered else None,
        )


@dataclass
class FakeIpfs:
    """Kubo as uploads use it: what is pinned, by CID."""

    pinned: dict[str, bytes] = field(default_factory=dict)
    down: bool = False

    async def add(self, data: bytes, *, pin: bool = True) -> AddResult:
        if self.down:
            raise KuboUnavailable("add: connection refused")
        cid = cid_of_bytes(data)
        self.pinned[cid] = data
        return AddResult(cid, len(data))

    async def pin_ls(self, cid: str) -> bool:
        if self.down:
            raise KuboUnavailable("pin/ls: connection refused")
        return cid in self.pinned

    async def cat_iter(self, cid: str) -> Any:
        data = self.pinned[cid]
        for at in range(0, len(data), 1000):
            yield data[at : at + 1000]


def wav(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    noise = np.random.default_rng().integers(-3000, 3000, (round(seconds * rate), channels))
    out = io.BytesIO()
    sf.write(out, noise.astype(np.int16), rate, format="WAV")
    return out.getvalue()


async def post(client: Any, status: int, **body: Any) -> dict[str, Any]:
    answer = await client.post("/api/generate", json={"prompt": "a calm piano piece", **body})
    got: dict[str, Any] = await answer.json()
    assert answer.status == status, got
    return got


async def edits_app(make_client: Any, **kwargs: Any) -> tuple[Any, Any, Any, FakeVerifier]:
    client, deps, kafka = await make_client(**kwargs)
    deps.verifier = verifier = FakeVerifier()
    deps.ipfs = FakeIpfs()
    return client, deps, kafka, verifier


async def finished_track(client: Any, deps: Any, kafka: Any, seconds: float = TRACK_S) -> str:
    """A completed request of this API: its id."""
    rid = (await post(client, 202, duration=5))["id"]
    track = track_published(rid, duration_s=seconds)
    await deps.store.apply([(rid, kafka.sent[-1]), (rid, track)], {})
    kafka.sent.clear()
    return rid


def refused(body: dict[str, Any], field: str, *words: str) -> None:
    error = body["error"]
    assert (error["code"], error["field"]) == ("invalid_request", field), error
    for word in words:
        assert word in error["message"], error


# ---------------------------------------------------------------- a track as the source


@pytest.mark.parametrize(
    ("edit", "duration"),
    [
        ({"task": "repaint", "repaintStart": 2, "repaintEnd": 8}, TRACK_S),
        ({"task": "extend", "extendAfter": 10}, TRACK_S + 10),
        ({"task": "extend", "extendBefore": 4.5}, TRACK_S + 4.5),
        ({"task": "cover", "coverStrength": 0.5}, TRACK_S),
    ],
)
async def test_an_edit_of_a_finished_track_carries_its_registered_source(
    make_client: Any, edit: dict[str, Any], duration: float
) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    record = await post(client, 202, sourceTrack=source, **edit)
    (sent,) = kafka.sent
    assert verifier.asked == [source]
    assert sent.edit_source == EditSource(
        kind="track",
        request_id=source,
        cid=CHAIN_CID,
        audio_hash=CHAIN_HASH,
        duration_s=TRACK_S,
    )
    assert sent.duration_s == duration and sent.task == edit["task"]
    # The record says what it was made from, in the API's names.
    assert record["editSource"] == {
        "kind": "track",
        "requestId": source,
        "cid": CHAIN_CID,
        "audioHash": CHAIN_HASH,
        "duration": TRACK_S,
    }
    assert record["duration"] == duration and record["sourceTrack"] == source
    again = await (await client.get(f"/api/generations/{record['id']}")).json()
    assert again["editSource"] == record["editSource"]


async def test_a_request_without_a_task_has_no_edit_source(make_client: Any) -> None:
    client, _, kafka, verifier = await edits_app(make_client)
    record = await post(client, 202, **BODY)
    assert "editSource" not in record and kafka.sent[0].edit_source is None
    assert verifier.asked == []


async def test_an_edit_takes_no_duration(make_client: Any) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    body = await post(client, 422, task="cover", sourceTrack=source, duration=30)
    refused(body, "duration", "as long as its source")
    assert kafka.sent == [] and verifier.asked == []


async def test_a_source_track_must_exist_and_be_finished(make_client: Any) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    unknown = "0x" + "5e" * 32
    refused(await post(client, 422, task="cover", sourceTrack=unknown), "sourceTrack", "unknown")
    queued = (await post(client, 202, duration=5))["id"]
    body = await post(client, 422, task="cover", sourceTrack=queued)
    refused(body, "sourceTrack", "queued", "not finished yet")
    failed = (await post(client, 202, duration=5))["id"]
    failure = GenerationFailed(request_id=failed, stage="generator", code="policy", message="no")
    await deps.store.apply([(failed, kafka.sent[-1]), (failed, failure)], {})
    body = await post(client, 422, task="cover", sourceTrack=failed)
    refused(body, "sourceTrack", "failed", "no track")
    assert [m.request_id for m in kafka.sent] == [queued, failed]  # the edits: none
    assert verifier.asked == []


async def test_a_source_whose_bytes_do_not_verify_is_refused(make_client: Any) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    verifier.status, verifier.reason = VerdictStatus.MISMATCH, "audioHash and CID differ"
    body = await post(client, 422, task="cover", sourceTrack=source)
    refused(body, "sourceTrack", "do not match its registered audioHash", "differ")
    verifier.status, verifier.reason = VerdictStatus.NOT_REGISTERED, "not registered"
    refused(await post(client, 422, task="cover", sourceTrack=source), "sourceTrack", "registered")
    assert kafka.sent == []
    listed = await (await client.get("/api/generations")).json()
    assert [g["id"] for g in listed["items"]] == [source]  # nothing stored either


async def test_a_source_that_cannot_be_checked_is_503(make_client: Any) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    verifier.status, verifier.reason = VerdictStatus.UNKNOWN, "chain unreachable: refused"
    answer = await client.post(
        "/api/generate", json={"prompt": "x", "task": "cover", "sourceTrack": source}
    )
    body = await answer.json()
    assert answer.status == 503 and answer.headers["Retry-After"] == "5", body
    assert "chain unreachable" in body["error"]["message"] and kafka.sent == []


async def test_the_window_and_the_extension_must_fit(make_client: Any) -> None:
    client, deps, kafka, _ = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    repaint = {"task": "repaint", "sourceTrack": source, "repaintStart": 15}
    body = await post(client, 422, **repaint, repaintEnd=TRACK_S + 0.5)
    refused(body, "repaintEnd", "past the end of the source (20 s)")
    await post(client, 202, **repaint, repaintEnd=TRACK_S)  # to the very end: fine
    extend = {"task": "extend", "sourceTrack": source}
    refused(await post(client, 422, **extend, extendAfter=220.5), "extendAfter", "240")
    refused(await post(client, 422, **extend, extendBefore=221), "extendBefore", "241 s")
    sent = await post(client, 202, **extend, extendAfter=220)  # exactly 240 s
    assert sent["duration"] == 240


async def test_a_source_too_long_or_too_short_is_refused(make_client: Any) -> None:
    client, deps, kafka, _ = await edits_app(make_client)
    short = await finished_track(client, deps, kafka, seconds=4.0)  # a track of older limits
    refused(await post(client, 422, task="cover", sourceTrack=short), "sourceTrack", "4 s", "5")
    long = await finished_track(client, deps, kafka, seconds=240.5)
    body = await post(client, 422, task="cover", sourceTrack=long)
    refused(body, "sourceTrack", "240.5 s", "to 240 s")
    assert kafka.sent == []


async def test_a_model_that_cannot_run_the_task_is_named(make_client: Any) -> None:
    models = ModelsSettings(
        models={"fast": {"source": "acestep-v15-turbo"}, "full": {"source": "acestep-v15-base"}}
    ).catalog()  # type: ignore[arg-type]
    client, deps, kafka, verifier = await edits_app(make_client, models=models)
    source = await finished_track(client, deps, kafka)
    extract = {"task": "extract", "stem": "drums", "sourceTrack": source}
    body = await post(client, 422, **extract)  # fast, the default: a turbo model
    refused(body, "task", "model fast cannot extract", "repaint, cover")
    assert kafka.sent == [] and verifier.asked == []
    await post(client, 202, **extract, model="full")
    assert kafka.sent[0].model == "full" and kafka.sent[0].edit_source is not None


async def test_variations_of_an_edit_each_carry_its_source(make_client: Any) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    parent = await post(
        client, 202, task="extend", sourceTrack=source, extendAfter=5, variations=3, seed=1
    )
    assert len(kafka.sent) == 3 and verifier.asked == [source]  # checked once
    first = kafka.sent[0].edit_source
    assert first is not None and first.request_id == source
    for k, child in enumerate(kafka.sent[1:], start=1):
        assert child.parent_id == parent["id"] and child.variation == k
        assert child.edit_source == first and child.duration_s == TRACK_S + 5
        record = await (await client.get(f"/api/generations/{child.request_id}")).json()
        assert record["editSource"] == parent["editSource"]


async def test_a_retry_of_an_edit_reuses_its_source_without_checking_it_again(
    make_client: Any,
) -> None:
    client, deps, kafka, verifier = await edits_app(make_client)
    source = await finished_track(client, deps, kafka)
    body = {"prompt": "a calm piano piece", "task": "extend", "sourceTrack": source}
    body["extendAfter"] = 5
    headers = {"Idempotency-Key": "retry-1"}
    first = await client.post("/api/generate", json=body, headers=headers)
    verifier.status = VerdictStatus.UNKNOWN  # the chain is out of reach now
    again = await client.post("/api/generate", json=body, headers=headers)
    assert (first.status, again.status) == (202, 202)
    a, b = await first.json(), await again.json()
    assert a["id"] == b["id"] and a["editSource"] == b["editSource"]
    assert verifier.asked == [source]  # checked once, for the first
    other = await client.post("/api/generate", json=body | {"extendAfter": 6}, headers=headers)
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"


# ---------------------------------------------------------------- an upload as the source


async def test_an_edit_of_an_upload_reads_it_back(make_client: Any) -> None:
    client, deps, kafka, _ = await edits_app(make_client)
    data = wav(6.5)
    cid = cid_of_bytes(data)
    deps.ipfs.pinned[cid] = data
    record = await post(client, 202, task="extend", sourceUpload=cid, extendBefore=3)
    (sent,) = kafka.sent
    assert sent.edit_source == EditSource(
        kind="upload", cid=cid, audio_hash=keccak256_hex(data), duration_s=6.5
    )
    assert sent.duration_s == 9.5 and record["editSource"]["kind"] == "upload"
    assert "requestId" not in record["editSource"]


async def test_an_upload_source_must_be_a_pinned_upload(make_client: Any) -> None:
    client, deps, kafka, _ = await edits_app(make_client)
    never = cid_of_bytes(b"never uploaded")
    body = await post(client, 422, task="cover", sourceUpload=never)
    refused(body, "sourceUpload", "not an upload of this service (POST /api/uploads)")
    text = b"pinned, but not audio" * 10
    deps.ipfs.pinned[cid_of_bytes(text)] = text  # say, a manifest
    body = await post(client, 422, task="cover", sourceUpload=cid_of_bytes(text))
    refused(body, "sourceUpload", "not audio")
    deps.ipfs.down = True
    answer = await client.post(
        "/api/generate", json={"prompt": "x", "task": "cover", "sourceUpload": never}
    )
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert (await answer.json())["error"]["code"] == "ipfs_unavailable"
    assert kafka.sent == []


# ---------------------------------------------------------------- POST /api/uploads


def encoded(fmt: str, seconds: float = 6.0, rate: int = 8000, channels: int = 1) -> bytes:
    noise = np.random.default_rng().integers(-3000, 3000, (round(seconds * rate), channels))
    out = io.BytesIO()
    sf.write(out, noise.astype(np.int16), rate, format=fmt)
    return out.getvalue()


async def upload(client: Any, data: bytes, status: int, **kwargs: Any) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field(kwargs.pop("name", "file"), data, filename="song", content_type="audio/wav")
    answer = await client.post("/api/uploads", data=form, **kwargs)
    got: dict[str, Any] = await answer.json()
    assert answer.status == status, got
    return got


@pytest.mark.parametrize(("fmt", "channels"), [("WAV", 1), ("FLAC", 2), ("MP3", 2)])
async def test_an_upload_is_pinned_under_its_cid(make_client: Any, fmt: str, channels: int) -> None:
    client, deps, _, _ = await edits_app(make_client)
    data = encoded(fmt, 6.0, 22050 if fmt == "MP3" else 8000, channels)
    answer = await upload(client, data, 201)
    assert answer == {
        "cid": cid_of_bytes(data),
        "audioHash": keccak256_hex(data),
        "duration": 6.0,  # decoded frames / rate (libsndfile trims an MP3's encoder padding)
        "sampleRate": 22050 if fmt == "MP3" else 8000,
        "channels": channels,
        "format": fmt.lower(),
        "sizeBytes": len(data),
    }
    assert deps.ipfs.pinned == {answer["cid"]: data}
    assert await upload(client, data, 201) == answer  # the same bytes: the same answer


@pytest.mark.parametrize(
    ("data", "status", "code", "words"),
    [
        (b"RIFF, but no more", 415, "unsupported_audio", "WAV, FLAC or MP3"),
        (encoded("OGG"), 415, "unsupported_audio", "OGG audio is not accepted"),
        (encoded("WAV")[:-1000], 415, "unsupported_audio", "truncated"),
        (encoded("FLAC", 10)[:-3000], 415, "unsupported_audio", "not audio this service"),
        (encoded("WAV", channels=3), 415, "unsupported_audio", "3 channels"),
        (encoded("WAV", 4.9), 422, "upload_too_short", "at least 5 s"),
        (encoded("FLAC", 240.5, rate=1000), 422, "upload_too_long", "at most 240 s"),
    ],
)
async def test_an_upload_that_is_not_an_edit_source_is_refused(
    make_client: Any, data: bytes, status: int, code: str, words: str
) -> None:
    client, deps, _, _ = await edits_app(make_client)
    error = (await upload(client, data, status))["error"]
    assert (error["code"], error["field"]) == (code, "file") and words in error["message"]
    assert deps.ipfs.pinned == {}


async def test_an_upload_over_the_limit_is_413_and_not_pinned(make_client: Any) -> None:
    client, deps, _, _ = await edits_app(make_client)
    data = encoded("WAV", 8.0)
    deps.upload_max_bytes = len(data) - 1
    error = (await upload(client, data, 413))["error"]
    assert error["code"] == "upload_too_large" and deps.ipfs.pinned == {}
    deps.upload_max_bytes = len(data)
    await upload(client, data, 201)


async def test_an_upload_is_the_multipart_part_named_file(make_client: Any) -> None:
    client, deps, _, _ = await edits_app(make_client)
    data = encoded("WAV")
    answer = await client.post("/api/uploads", data=data)
    assert answer.status == 415
    assert (await answer.json())["error"]["code"] == "unsupported_media_type"
    error = (await upload(client, data, 422, name="audio"))["error"]
    assert error["field"] == "file" and "one part, named file" in error["message"]
    boundary = "b0undary"
    broken = f"--{boundary}\r\nnot a header--{boundary}--\r\n".encode()
    answer = await client.post(
        "/api/uploads",
        data=broken,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.status == 400 and deps.ipfs.pinned == {}
    form = aiohttp.FormData()  # a form's other field
    form.add_field("title", "my song")
    form.add_field("file", data, filename="song.wav", content_type="audio/wav")
    answer = await client.post("/api/uploads", data=form)
    assert answer.status == 422 and deps.ipfs.pinned == {}


async def test_uploads_need_a_key_and_spend_the_submission_budgets(make_client: Any) -> None:
    client, _, _, _ = await edits_app(make_client, required=True, burst=1, per_minute=0.001)
    data = encoded("WAV")
    assert (await upload(client, data, 401))["error"]["code"] == "unauthorized"
    key = bearer(KEYS["alice"])
    for _ in range(3):  # refusals spend the errors budget, not the one of submissions
        await upload(client, b"not audio", 415, headers=key)
    await upload(client, data, 201, headers=key)
    again = await upload(client, data, 429, headers=key)
    assert again["error"]["code"] == "rate_limited"


async def test_ipfs_out_of_reach_is_503_and_a_cid_kubo_disputes_502(make_client: Any) -> None:
    client, deps, _, _ = await edits_app(make_client)
    data = encoded("WAV")
    deps.ipfs.down = True
    form = aiohttp.FormData()
    form.add_field("file", data, filename="song.wav")
    answer = await client.post("/api/uploads", data=form)
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert (await answer.json())["error"]["code"] == "ipfs_unavailable"
    deps.ipfs = None
    assert (await upload(client, data, 503))["error"]["code"] == "ipfs_unavailable"

    class OtherCid(FakeIpfs):
        async def add(self, data: bytes, *, pin: bool = True) -> AddResult:
            return AddResult("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", 1)

    deps.ipfs = OtherCid()
    error = (await upload(client, data, 502))["error"]
    assert error["code"] == "cid_mismatch" and cid_of_bytes(data) in error["message"]
