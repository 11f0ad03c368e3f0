"""The generator's Kafka logic: ``PREFIX.requests.v1`` -> ``PREFIX.audio.v1``.

`handle` is a plain async function ``handle(record, deps) -> outputs`` run by
`acesteps.kafka.loop.TransactionalLoop`. For each `GenerationRequest`:

1. check it before any GPU work: the served model it names (`generator.served`: an unknown
   name is refused with code ``unknown_model``; the model is loaded if it is not, off the
   event loop), its style preset (`generator.presets`: tags and LoRA adapter; an unknown
   name is refused with ``unknown_preset``), then `generator.validation.prepare` (content
   policy, token limits); a
   refusal or invalid input becomes a `GenerationFailed` for ``PREFIX.failures.v1`` that
   keeps the request's source and chain origin;
2. generate the audio off the event loop, so the consumer keeps its heartbeats; `prefetch`
   has already queued every valid request of the Kafka batch (`generator.pipeline`: batched
   where the model allows, encoding overlapping the next model call);
3. resample and encode it (MP3 320 kbps CBR or 16-bit WAV, 44.1 kHz stereo) in a thread;
4. hash it (keccak256) and compute its CID locally, and describe how it was made (the
   generation manifest, `generator.provenance`);
5. return the chunks (at most 512 KiB each) and then the `AudioReady`; the loop writes them
   and the consumed offset in one transaction, so a crash before the commit means the
   request is generated again and no half file is ever visible.

A request that must stop (`generator.stops`: canceled through ``PREFIX.cancels.v1``, or past
its deadline) is not generated: before its model work, or between two denoising steps when
every request of its model call must stop, it becomes a `GenerationCanceled` for
``PREFIX.failures.v1``, and no audio is written for it.

`GenerationRevoked` records on the requests topic are acknowledged and skipped. A
revocation that arrives after its request was generated cannot unpublish it; the status
projection shows it as revoked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from acesteps.cancels import Stop
from acesteps.editing import PIPELINE_TASKS
from acesteps.errors import PermanentError
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import (
    TYPE_HEADER,
    AudioChunk,
    AudioReady,
    GenerationCanceled,
    GenerationFailed,
    GenerationRequest,
)
from acesteps.progress import NoProgress, Progress
from acesteps.topics import Topics
from generator import audio, metrics
from generator.editing import Edit, Sources, plan_edit
from generator.errors import Interrupted, PermanentGeneratorError
from generator.jobs import Job
from generator.pipeline import Pipeline
from generator.policy import ContentPolicy
from generator.presets import Presets
from generator.provenance import build_manifest
from generator.stops import Stops
from generator.validation import prepare

__all__ = ["Deps", "handle", "prefetch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    topics: Topics
    models: Any  # generator.served.ServedModels (kept untyped here so tests can pass a fake)
    policy: ContentPolicy
    pipeline: Pipeline
    progress: Progress = field(default_factory=NoProgress)
    stops: Stops = field(default_factory=Stops)
    presets: Presets = field(default_factory=Presets)
    sources: Sources = field(default_factory=lambda: Sources(None))


def _canceled_record(deps: Deps, request: GenerationRequest, stop: Stop, when: str) -> OutRecord:
    canceled = GenerationCanceled(
        request_id=request.request_id,
        stage="generator",
        reason=stop.reason,
        message=f"{stop.message}; {when}",
        source=request.source,
        chain=request.chain,
    )
    return OutRecord.message(deps.topics.failures, request.request_id, canceled)


def _failed(request: GenerationRequest, exc: PermanentGeneratorError) -> GenerationFailed:
    return GenerationFailed(
        request_id=request.request_id,
        stage="generator",
        code=exc.code,
        message=str(exc)[:4000],
        source=request.source,
        chain=request.chain,
    )


def _refused(
    record: InRecord, request: GenerationRequest, deps: Deps, exc: PermanentGeneratorError
) -> list[OutRecord]:
    log.warning("%s: %s: %s", record.where(), exc.code, exc)
    metrics.REQUESTS.labels("refused").inc()
    failed = _failed(request, exc)
    return [OutRecord.message(deps.topics.failures, request.request_id, failed)]


def _key(record: InRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _request(record: InRecord) -> GenerationRequest | None:
    if record.header(TYPE_HEADER) == b"GenerationRevoked":
        return None
    try:
        return decode_value(GenerationRequest, record)
    except (PermanentError, ValueError):
        return None


def _prepared(
    request: GenerationRequest | None, deps: Deps
) -> tuple[GenerationRequest, Job] | None:
    """The request and its job, or None when the handler will refuse the record (or its
    model is not loaded: the handler loads it)."""
    if request is None or request.task is not None:
        return None  # an edit is prepared by its handler, which fetches its source
    try:
        name = deps.models.resolve(request.model)
        model = deps.models.known(name)
        if model is None:
            return None
        style = deps.presets.style(request.preset, name)
        return request, prepare(request, deps.policy, model, name, style)
    except (PermanentError, ValueError):
        return None


async def _model(deps: Deps, request: GenerationRequest) -> tuple[str, Any]:
    """The served model ``request`` names, loaded (off the event loop) if it was not;
    raises `UnknownModelError` or `ModelLoadFailed` (`generator.served`)."""
    name = deps.models.resolve(request.model)
    model = deps.models.known(name)
    if model is None:
        model = await asyncio.to_thread(deps.models.model, name)
    return name, model


async def _edit(request: GenerationRequest, model: Any, deps: Deps) -> Edit | None:
    """An edit's plan with its source fetched and checked (`generator.editing`); None for a
    request that is not an edit. A task the model cannot run is refused before the fetch."""
    if request.task is None or request.edit_source is None:
        return None
    model.check_task(PIPELINE_TASKS[request.task])
    return plan_edit(request, await deps.sources.load(request.edit_source))


async def prefetch(records: Sequence[InRecord], deps: Deps) -> None:
    """Start the model on every valid request of the batch at once (`generator.pipeline`)."""
    requests = [_request(record) for record in records]
    for request in requests:  # load the models the batch needs; the handler reports failures
        if request is not None:
            deps.stops.watch(request)
            if deps.stops.why(request.request_id) is not None:
                continue  # stopped: no model loaded for it
            try:
                await _model(deps, request)
            except PermanentError:
                pass
    wanted, valid, ids = [], [], {}
    for record, request in zip(records, requests, strict=True):
        if (prepared := _prepared(request, deps)) is not None:
            request, job = prepared
            deps.stops.watch(request)
            if deps.stops.why(request.request_id) is not None:
                continue  # the handler says why; no model work for it
            key = _key(record)
            wanted.append((key, job, request.format))
            valid.append(prepared)
            ids[key] = request.request_id
    deps.pipeline.schedule(wanted, request_ids=ids)
    # Advisory, after the work is queued: the status says "generating" while the model runs.
    await deps.progress.report([request.request_id for request, _ in valid], "generating")


async def handle(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    if record.header(TYPE_HEADER) == b"GenerationRevoked":
        return []
    request = decode_value(GenerationRequest, record)

    deps.stops.watch(request)
    try:
        return await _generate(record, request, deps)
    finally:
        deps.stops.done(request.request_id)


async def _generate(
    record: InRecord, request: GenerationRequest, deps: Deps
) -> Sequence[OutRecord]:
    # 1. Checks before any GPU work: still wanted, and acceptable.
    if (stop := deps.stops.why(request.request_id)) is not None:
        metrics.REQUESTS.labels("canceled").inc()
        return [_canceled_record(deps, request, stop, "stopped before generating")]
    try:
        name, model = await _model(deps, request)
        style = deps.presets.style(request.preset, name)
        edit = await _edit(request, model, deps)
        job = prepare(request, deps.policy, model, name, style, edit)
    except PermanentGeneratorError as exc:
        return _refused(record, request, deps, exc)

    # 2-4. Model, encoding and hashing (batched and overlapped by the pipeline).
    try:
        encoded = await deps.pipeline.result(_key(record), job, request.format)
    except Interrupted as exc:
        metrics.REQUESTS.labels("canceled").inc()
        stop = deps.stops.why(request.request_id) or Stop("requested", "stopped")
        return [_canceled_record(deps, request, stop, str(exc))]
    except PermanentGeneratorError as exc:  # e.g. a preset's adapter that does not load
        return _refused(record, request, deps, exc)
    except Exception:
        metrics.REQUESTS.labels("failed").inc()
        raise
    if (stop := deps.stops.why(request.request_id)) is not None:
        # Its model call ran on for the others of its batch: its audio is dropped.
        metrics.REQUESTS.labels("canceled").inc()
        return [_canceled_record(deps, request, stop, "stopped after generating")]
    metrics.REQUESTS.labels("generated").inc()

    # 5. Chunks, then what they add up to.
    chunks = AudioChunk.split(request.request_id, encoded.data)
    ready = AudioReady(
        request_id=request.request_id,
        audio_hash=encoded.audio_hash,
        cid=encoded.cid,
        size_bytes=len(encoded.data),
        chunks=len(chunks),
        format=request.format,
        sample_rate=audio.SAMPLE_RATE,
        channels=2,
        duration_s=job.duration_s,
        seed=job.seed,
        model_id=model.model_id,
        model=model.name,
        timings=encoded.timings,
        manifest=build_manifest(request, job, model, encoded),
        deadline=request.deadline,
        **request.origin().model_dump(),
    )
    return [
        *(OutRecord.chunk(deps.topics.audio, c) for c in chunks),
        OutRecord.message(deps.topics.audio, request.request_id, ready),
    ]
