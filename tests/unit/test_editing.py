"""Edits on the tiny checkpoint through the real pipeline: repaint, extend, cover's refusal,
the source's checks, the splice, the manifest and reproduction (`generator.editing`)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboUnavailable
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.records import InRecord
from acesteps.messages import (
    AudioReady,
    GenerationFailed,
    GenerationRequest,
    decode,
    encode,
    headers_for,
)
from acesteps.topics import Topics
from acesteps.types import AudioFormat
from generator import audio
from generator.editing import (
    SourceAudio,
    SourceMismatch,
    Sources,
    SourceUnavailable,
    SourceUnreadable,
    TaskUnsupported,
    decode_source,
    plan_edit,
    splice,
)
from generator.jobs import Job
from generator.model import Model, load_pipeline
from generator.pipeline import Pipeline
from generator.policy import ContentPolicy
from generator.reproduce import reproduce
from generator.served import ServedModels
from generator.settings import GeneratorSettings
from generator.tiny import build_tiny
from generator.worker import Deps, handle, prefetch
from tests.unit.generator_fixtures import made, tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

RATE = 44_100
SOURCE_ID = "0x" + "11" * 32
EDIT_ID = "0x" + "22" * 32


def _request(**options: Any) -> GenerationRequest:
    return GenerationRequest(request_id=EDIT_ID, source="http", requester="k", **options)


@pytest.fixture(scope="module")
def source_wav(tiny_model: Model) -> bytes:
    """A 6 s track of the tiny model, as the service publishes it (WAV)."""
    request = GenerationRequest(
        request_id=SOURCE_ID,
        source="http",
        requester="k",
        prompt="piano",
        duration_s=6,
        format="wav",
        seed=3,
    )
    (raw,) = tiny_model.generate([Job.from_request(request)])
    return audio.encode(raw, 6, "wav")


def _origin(data: bytes, kind: str = "track") -> EditSource:
    duration = sf.info(io.BytesIO(data)).frames / RATE
    if kind == "track":
        return EditSource(
            kind="track",
            request_id=SOURCE_ID,
            cid=cid_of_bytes(data),
            audio_hash=keccak256_hex(data),
            duration_s=duration,
        )
    return EditSource(
        kind="upload", cid=cid_of_bytes(data), audio_hash=keccak256_hex(data), duration_s=duration
    )


def _edit_request(data: bytes, fmt: AudioFormat = "wav", **edit: Any) -> GenerationRequest:
    origin = _origin(data)
    extra = (edit.get("extend_before") or 0) + (edit.get("extend_after") or 0)
    return _request(
        prompt="drums",
        duration_s=origin.duration_s + extra,
        format=fmt,
        seed=5,
        source_track=SOURCE_ID,
        edit_source=origin,
        **edit,
    )


def _run(model: Model, request: GenerationRequest, data: bytes) -> tuple[Any, bytes, Job]:
    assert request.edit_source is not None
    job = Job.from_request(
        request, edit=plan_edit(request, decode_source(data, request.edit_source))
    )
    manifest, out = made(model, request, job)
    return manifest, out, job


def _samples(data: bytes) -> npt.NDArray[np.int16]:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE
    return np.asarray(samples)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_repaint_keeps_the_source_outside_the_window_sample_for_sample(
    tiny_model: Model, source_wav: bytes, fmt: AudioFormat
) -> None:
    request = _edit_request(source_wav, fmt, task="repaint", repaint_start=2.0, repaint_end=4.0)
    _, out, job = _run(tiny_model, request, source_wav)
    got, source = _samples(out), _samples(source_wav)
    assert got.shape == source.shape
    a, b = 2 * RATE, 4 * RATE
    assert np.array_equal(got[:a], source[:a]) and np.array_equal(got[b:], source[b:])
    assert not np.array_equal(got[a:b], source[a:b])  # the window is new music
    # What the pipeline alone guarantees: nothing outside the window (it regenerates the whole
    # clip and normalizes its peak), which is why the splice is there.
    (raw,) = tiny_model.generate([job])
    alone = audio.resample(raw, job.duration_s)
    assert float(np.abs(alone[:a] - source[:a] / 32767).max()) > 1e-3


@pytest.mark.parametrize("side", ["extend_after", "extend_before"])
def test_extend_makes_the_requested_length_and_keeps_the_source(
    tiny_model: Model, source_wav: bytes, side: str
) -> None:
    request = _edit_request(source_wav, task="extend", **{side: 3.0})
    manifest, out, _ = _run(tiny_model, request, source_wav)
    got, source = _samples(out), _samples(source_wav)
    assert got.shape[0] == 9 * RATE
    kept = got[: 6 * RATE] if side == "extend_after" else got[3 * RATE :]
    added = got[6 * RATE :] if side == "extend_after" else got[: 3 * RATE]
    assert np.array_equal(kept, source)
    assert np.abs(added.astype(np.int32)).max() > 0  # not silence: the model's music
    assert manifest.edit is not None and manifest.edit.task == "repaint"
    assert (manifest.edit.pad_before_s, manifest.edit.pad_after_s) == (
        (0.0, 3.0) if side == "extend_after" else (3.0, 0.0)
    )


def test_an_edit_is_a_pure_function_of_its_request_and_source(
    tiny_model: Model, source_wav: bytes
) -> None:
    request = _edit_request(source_wav, task="repaint", repaint_start=1.0, repaint_end=3.0)
    _, first, _ = _run(tiny_model, request, source_wav)
    _, again, _ = _run(tiny_model, request, source_wav)
    assert first == again
    other = request.model_copy(update={"seed": 6})
    _, reseeded, _ = _run(tiny_model, other, source_wav)
    assert reseeded != first


def test_the_manifest_records_the_edit_and_the_track_reproduces(
    tiny_model: Model, tiny_settings: GeneratorSettings, source_wav: bytes
) -> None:
    request = _edit_request(source_wav, task="repaint", repaint_start=2.0, repaint_end=4.0)
    manifest, out, _ = _run(tiny_model, request, source_wav)
    assert manifest.request.edit_source == request.edit_source
    assert manifest.edit is not None and manifest.edit.source_frames == 6 * RATE
    assert (manifest.edit.window_start_s, manifest.edit.window_end_s) == (2.0, 4.0)
    assert manifest.output.file.audio_hash == keccak256_hex(out)

    assert reproduce(manifest, tiny_settings, source=source_wav).status == "REPRODUCED"
    missing = reproduce(manifest, tiny_settings)
    assert missing.status == "CANNOT TELL" and "--source" in missing.reason
    other = reproduce(manifest, tiny_settings, source=source_wav[:-2] + b"\x01\x02")
    assert other.status == "CANNOT TELL" and "audioHash" in other.reason


def test_a_cover_is_refused_by_a_checkpoint_without_an_audio_tokenizer(
    tiny_model: Model, source_wav: bytes
) -> None:
    request = _edit_request(source_wav, task="cover", cover_strength=0.5)
    job = Job.from_request(
        request, edit=plan_edit(request, decode_source(source_wav, _origin(source_wav)))
    )
    with pytest.raises(TaskUnsupported, match="audio tokenizer"):
        tiny_model.check_task("cover")
    with pytest.raises(TaskUnsupported):
        tiny_model.generate([job])


def test_jobs_of_different_edits_never_share_a_call(tiny_model: Model, source_wav: bytes) -> None:
    plain = Job(caption="x", lyrics="[Instrumental]", duration_s=6.0, seed=1)
    one = _edit_request(source_wav, task="repaint", repaint_start=1.0, repaint_end=4.0)
    two = one.model_copy(update={"repaint_end": 5.0})
    source = decode_source(source_wav, _origin(source_wav))
    jobs = [plain, *(Job.from_request(r, edit=plan_edit(r, source)) for r in (one, two))]
    keys = {tiny_model.batch_key(job) for job in jobs}
    assert len(keys) == 3


def test_the_source_must_hash_to_its_audio_hash_and_be_audio(source_wav: bytes) -> None:
    origin = _origin(source_wav)
    with pytest.raises(SourceMismatch, match="audioHash"):
        decode_source(source_wav + b"\x00", origin)
    junk = b"not audio at all" * 100
    with pytest.raises(SourceUnreadable):
        decode_source(junk, origin.model_copy(update={"audio_hash": keccak256_hex(junk)}))


def test_a_mono_source_at_another_rate_is_made_stereo_at_44k() -> None:
    tone = (0.3 * np.sin(np.arange(48_000 * 6) * 2 * np.pi * 440 / 48_000)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, tone, 48_000, format="FLAC", subtype="PCM_16")
    data = buffer.getvalue()
    decoded = decode_source(data, _origin(data, "upload"))
    assert decoded.pcm.shape == (2, 6 * RATE)
    assert np.array_equal(decoded.pcm[0], decoded.pcm[1])


def test_the_splice_fades_inside_the_window_only_where_the_source_goes_on() -> None:
    frames = 6 * RATE
    source = SourceAudio("0x" + "aa" * 32, np.full((2, frames), 0.5, np.float32))
    model = np.full((2, frames), -0.5, np.float32)
    request = _request(
        prompt="x",
        duration_s=6.0,
        task="repaint",
        source_track=SOURCE_ID,
        repaint_start=1.0,
        repaint_end=4.0,
        edit_source=EditSource(
            kind="track",
            request_id=SOURCE_ID,
            cid="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
            audio_hash=source.audio_hash,
            duration_s=6.0,
        ),
    )
    edit = plan_edit(request, source)
    assert edit is not None
    out = splice(model, edit)
    assert (out[:, :RATE] == 0.5).all() and (out[:, 4 * RATE :] == 0.5).all()
    fade = round(0.05 * RATE)
    assert (out[:, RATE + fade : 4 * RATE - fade] == -0.5).all()
    ramp = out[0, RATE : RATE + fade]
    assert (np.diff(ramp) < 0).all() and -0.5 < ramp[-1] < ramp[0] < 0.5


class _Kubo:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.calls = files, 0

    async def cat(self, cid: str) -> bytes:
        self.calls += 1
        if cid not in self.files:
            raise KuboUnavailable(f"no {cid}")
        return self.files[cid]


def test_sources_fetch_by_cid_check_and_keep_the_last_ones(source_wav: bytes) -> None:
    origin = _origin(source_wav)
    kubo = _Kubo({origin.cid: source_wav})
    sources = Sources(kubo)
    first = asyncio.run(sources.load(origin))
    assert asyncio.run(sources.load(origin)) is first and kubo.calls == 1
    gone = origin.model_copy(
        update={
            "cid": "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "audio_hash": "0x" + "00" * 32,
        }
    )
    with pytest.raises(SourceUnavailable):  # retried by the loop, never a failed request
        asyncio.run(sources.load(gone))


# ------------------------------------------------------------------ the worker

TOPICS = Topics("t")


def _record(req: GenerationRequest) -> InRecord:
    headers = tuple(headers_for(req))
    return InRecord(TOPICS.requests, 0, 0, req.request_id.encode(), encode(req), headers)


@pytest.fixture
async def worker(tiny_model: Model, source_wav: bytes) -> AsyncIterator[tuple[Deps, _Kubo]]:
    served = ServedModels.of(tiny_model)
    pipeline = Pipeline(served, encode_threads=1)
    feeder = asyncio.create_task(pipeline.run())
    kubo = _Kubo({cid_of_bytes(source_wav): source_wav})
    policy = ContentPolicy.from_file(None, enabled=False)
    try:
        yield Deps(TOPICS, served, policy, pipeline, sources=Sources(kubo)), kubo
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


async def test_the_worker_edits_and_its_manifest_names_the_source(
    worker: tuple[Deps, _Kubo], source_wav: bytes
) -> None:
    deps, kubo = worker
    req = _edit_request(source_wav, task="extend", extend_after=2.0)
    await prefetch([_record(req)], deps)  # an edit is not prefetched: its source comes first
    outputs = await handle(_record(req), deps)
    ready = decode(AudioReady, outputs[-1].value)
    assert ready.duration_s == 8.0 and kubo.calls == 1
    assert ready.manifest is not None and ready.manifest.request.edit_source == req.edit_source


@pytest.mark.parametrize(
    ("edit", "code", "says"),
    [
        ({"task": "cover"}, "task_unsupported", "cannot make covers"),
        ({"task": "repaint", "repaint_start": 1.0, "repaint_end": 2.0}, "source_mismatch", "not"),
    ],
)
async def test_an_edit_that_cannot_run_is_a_failure_record_not_a_crash(
    worker: tuple[Deps, _Kubo], source_wav: bytes, edit: dict[str, Any], code: str, says: str
) -> None:
    deps, kubo = worker
    req = _edit_request(source_wav, **edit)
    if code == "source_mismatch":  # IPFS gives other bytes than the registered ones
        assert req.edit_source is not None
        kubo.files[req.edit_source.cid] = source_wav[:-4] + b"\x00\x01\x02\x03"
    (out,) = await handle(_record(req), deps)
    failed = decode(GenerationFailed, out.value)
    assert out.topic == TOPICS.failures
    assert (failed.code, failed.stage) == (code, "generator")
    assert says in failed.message
    if code == "task_unsupported":
        assert kubo.calls == 0  # refused before the source was fetched


# ------------------------------------------------------------------ extract


def test_a_turbo_checkpoint_refuses_to_extract_and_says_why(tiny_model: Model) -> None:
    with pytest.raises(TaskUnsupported, match="turbo checkpoint, which cannot extract"):
        tiny_model.check_task("extract")


def test_a_base_checkpoint_extracts_a_stem_through_the_pipeline(
    tiny_settings: GeneratorSettings, source_wav: bytes, tmp_path: Path
) -> None:
    base_dir = build_tiny(tmp_path / "tiny-base", turbo=False)
    base = load_pipeline(
        tiny_settings.with_overrides(models={"tiny-base": {"source": str(base_dir)}})
    )
    assert not base.is_turbo
    base.check_task("extract")
    request = _edit_request(source_wav, task="extract", stem="drums")
    manifest, out, job = _run(base, request, source_wav)
    assert "Extract the DRUMS track" in base.formatted_inputs(job)[0]
    assert manifest.edit is not None and manifest.edit.stem == "drums"
    assert _samples(out).shape == _samples(source_wav).shape  # as long as the source
    _, again, _ = _run(base, request, source_wav)
    assert again == out
