"""The generator's Kafka logic: ``PREFIX.requests.v1`` -> ``PREFIX.audio.v1``.

`handle` is a plain async function ``handle(record, deps) -> outputs`` run by
`acesteps.kafka.loop.TransactionalLoop`. For each `GenerationRequest`:

1. check it before any GPU work (`generator.validation.prepare`: content policy, token
   limits); a refusal or invalid input becomes a `GenerationFailed` for
   ``PREFIX.failures.v1`` that keeps the request's source and chain origin;
2. generate the audio off the event loop (`asyncio.to_thread`), so the consumer keeps its
   heartbeats during inference;
3. resample and encode it (MP3 320 kbps CBR or 16-bit WAV, 44.1 kHz stereo) in a thread;
4. hash it (keccak256) and compute its CID locally;
5. return the chunks (at most 512 KiB each) and then the `AudioReady`; the loop writes them
   and the consumed offset in one transaction, so a crash before the commit means the
   request is generated again and no half file is ever visible.

`GenerationRevoked` records on the requests topic are acknowledged and skipped. A
revocation that arrives after its request was generated cannot unpublish it; the status
projection shows it as revoked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.records import InRecord, OutRecord, decode_value
from acesteps.messages import (
    TYPE_HEADER,
    AudioChunk,
    AudioReady,
    GenerationFailed,
    GenerationRequest,
)
from acesteps.topics import Topics
from generator import audio
from generator.errors import PermanentGeneratorError
from generator.policy import ContentPolicy
from generator.validation import prepare

__all__ = ["Deps", "handle"]


@dataclass(frozen=True)
class Deps:
    topics: Topics
    model: Any  # generator.model.Model (kept untyped here so tests can pass a fake)
    policy: ContentPolicy


def _failed(request: GenerationRequest, exc: PermanentGeneratorError) -> GenerationFailed:
    return GenerationFailed(
        request_id=request.request_id,
        stage="generator",
        code=exc.code,
        message=str(exc)[:4000],
        source=request.source,
        chain=request.chain,
    )


async def handle(record: InRecord, deps: Deps) -> Sequence[OutRecord]:
    if record.header(TYPE_HEADER) == b"GenerationRevoked":
        return []
    request = decode_value(GenerationRequest, record)
    timings: dict[str, float] = {}

    # 1. Checks before any GPU work.
    try:
        job = prepare(request, deps.policy, deps.model)
    except PermanentGeneratorError as exc:
        failed = _failed(request, exc)
        return [OutRecord.message(deps.topics.failures, request.request_id, failed)]

    # 2. The model, off the event loop.
    start = time.perf_counter()
    (raw,) = await asyncio.to_thread(deps.model.generate, [job])
    timings["model_s"] = time.perf_counter() - start

    # 3. Resample and encode.
    start = time.perf_counter()
    data = await asyncio.to_thread(audio.encode, raw, job.duration_s, request.format)
    timings["encode_s"] = time.perf_counter() - start

    # 4. Identity of the file.
    start = time.perf_counter()
    audio_hash, cid = keccak256_hex(data), cid_of_bytes(data)
    timings["hash_s"] = time.perf_counter() - start

    # 5. Chunks, then what they add up to.
    chunks = AudioChunk.split(request.request_id, data)
    ready = AudioReady(
        request_id=request.request_id,
        audio_hash=audio_hash,
        cid=cid,
        size_bytes=len(data),
        chunks=len(chunks),
        format=request.format,
        sample_rate=audio.SAMPLE_RATE,
        channels=2,
        duration_s=job.duration_s,
        seed=job.seed,
        model_id=deps.model.model_id,
        timings={k: round(v, 6) for k, v in timings.items()},
    )
    return [
        *(OutRecord.chunk(deps.topics.audio, c) for c in chunks),
        OutRecord.message(deps.topics.audio, request.request_id, ready),
    ]
