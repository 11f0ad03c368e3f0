"""Dynamic batching, and encoding that overlaps the next batch's GPU work.

The consume loop hands each Kafka batch (at most ``generator_max_batch`` requests, waiting at
most ``generator_max_wait_ms`` for them) to `Pipeline.schedule` before handling its records
one by one. `schedule` groups the jobs the way the models allow (`ServedModels.plan`: by
served model first, never two models in one call, then `Model.plan`: one job per call in
``sequential`` mode, equal `batch_key` in ``batched`` mode) and queues the groups. One
task, `Pipeline.run`, takes groups in order: it runs the model on a group (in a thread, so
the event loop keeps the consumer's heartbeats), hands each result to a thread pool for
resampling, encoding and hashing, and goes straight on to the next group: the CPU stages of
one group overlap the model work of the next. The handler awaits its record's result.

Between two denoising steps the pipeline asks ``stopping`` about the group's requests: when
every one of them must stop (canceled, past its deadline), the call is interrupted and each
handler gets `Interrupted`. A group where only some must stop runs on (their results are
dropped by the handler): stopping one job must never change another's bytes.

CUDA out of memory on a group of several jobs splits it in halves and tries again; a single
job that does not fit fails with `OutOfMemory`, which the loop retries with backoff and
dead-letters after its bounded attempts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.progress import Progress
from acesteps.types import AudioFormat
from generator import audio, editing, metrics
from generator.errors import Interrupted, OutOfMemory
from generator.jobs import Job
from generator.model import OnStep

__all__ = ["Encoded", "Pipeline", "pcm_keccak256"]


@dataclass(frozen=True)
class Encoded:
    data: bytes
    audio_hash: str
    cid: str
    timings: dict[str, float]
    pcm_keccak256: str
    """Of the model's float32 samples (little-endian, channel after channel), before resampling."""
    pcm_frames: int
    batch_size: int
    encoder: str | None = field(kw_only=True)
    """What wrote the file (`audio.file_encoder`): the MP3 encoder's name, None for WAV and
    FLAC; the manifest's ``output.file.encoder``."""


@dataclass
class _Item:
    key: str
    job: Job
    fmt: AudioFormat
    future: asyncio.Future[Encoded]
    timings: dict[str, float] = field(default_factory=dict)
    request_id: str | None = None  # for step progress


def _encode(raw: npt.NDArray[np.float32], item: _Item) -> Encoded:
    start = time.perf_counter()
    pcm_hash = pcm_keccak256(raw)
    encoder = audio.file_encoder(item.fmt)  # recorded as what encodes the file just below
    splice = editing.splicer(item.job.edit)
    data = audio.encode(raw, item.job.duration_s, item.fmt, encoder, splice)
    encoded = time.perf_counter()
    audio_hash, cid = keccak256_hex(data), cid_of_bytes(data)
    timings = {
        **item.timings,
        "encode_s": encoded - start,
        "hash_s": time.perf_counter() - encoded,
    }
    metrics.STAGE_SECONDS.labels("encode").observe(timings["encode_s"])
    metrics.STAGE_SECONDS.labels("hash").observe(timings["hash_s"])
    return Encoded(
        data,
        audio_hash,
        cid,
        {k: round(v, 6) for k, v in timings.items() if k != "batch_size"},
        pcm_hash,
        int(raw.shape[-1]),
        int(item.timings.get("batch_size", 1)),
        encoder=encoder,
    )


def pcm_keccak256(raw: npt.NDArray[np.float32]) -> str:
    """keccak256 of ``[channels, frames]`` samples as little-endian float32, channel by channel."""
    return keccak256_hex(np.ascontiguousarray(raw, dtype="<f4").tobytes())


STEP_REPORT_EVERY_S = 0.5
"""Step progress is announced at most this often per model call, and at its last step."""


Stopping = Callable[[str], object | None]
"""request id -> why it must stop (anything but None), asked between denoising steps."""


class Pipeline:
    def __init__(
        self,
        model: Any,
        encode_threads: int | None = None,
        progress: Progress | None = None,
        stopping: Stopping | None = None,
    ) -> None:
        self._model = model
        self._progress = progress
        self._stopping = stopping
        self._reports: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(
            max_workers=encode_threads or os.cpu_count() or 1, thread_name_prefix="encode"
        )
        self._queue: asyncio.Queue[list[_Item]] = asyncio.Queue()
        self._pending: dict[str, _Item] = {}

    def schedule(
        self,
        wanted: list[tuple[str, Job, AudioFormat]],
        *,
        batch: bool = True,
        request_ids: Mapping[str, str] | None = None,
    ) -> None:
        """Queue jobs; keys already queued are kept. For a new ``batch``, queued jobs that are
        not in it are dropped: their records will not be handled now (a rebalance, a rewind).
        ``request_ids`` (by key) are whose denoising steps are announced (`Progress.steps`)."""
        keys = {key for key, _, _ in wanted}
        for key in list(self._pending) if batch else []:
            if key not in keys:
                self._pending.pop(key).future.cancel()
        loop = asyncio.get_running_loop()
        ids = request_ids or {}
        fresh = [
            _Item(key, job, fmt, loop.create_future(), request_id=ids.get(key))
            for key, job, fmt in wanted
            if key not in self._pending
        ]
        for item in fresh:
            self._pending[item.key] = item
        for group in self._model.plan([item.job for item in fresh]):
            self._queue.put_nowait([fresh[i] for i in group])

    async def result(self, key: str, job: Job, fmt: AudioFormat) -> Encoded:
        """The encoded file of ``key``, scheduling it alone if no batch did."""
        if key not in self._pending:
            self.schedule([(key, job, fmt)], batch=False)
        item = self._pending[key]
        try:
            return await asyncio.shield(item.future)
        finally:
            if item.future.done():
                self._pending.pop(key, None)

    async def run(self) -> None:
        """Model work for one group after another, until cancelled."""
        try:
            while True:
                group = await self._queue.get()
                group = [item for item in group if not item.future.cancelled()]
                if group:
                    await self._generate(group)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _generate(self, group: list[_Item]) -> None:
        start = time.perf_counter()
        on_step = self._step_hook(group)
        try:
            raws = await asyncio.to_thread(
                self._model.generate, [item.job for item in group], on_step
            )
        except OutOfMemory as exc:
            if len(group) > 1:
                half = len(group) // 2
                await self._generate(group[:half])
                await self._generate(group[half:])
                return
            _fail(group, exc)
            return
        except Exception as exc:  # delivered to the handler, which lets the loop decide
            _fail(group, exc)
            return
        elapsed = time.perf_counter() - start
        model_s = elapsed / len(group)
        _observe_model(group, elapsed)
        loop = asyncio.get_running_loop()
        for item, raw in zip(group, raws, strict=True):
            item.timings["model_s"] = model_s
            item.timings["batch_size"] = len(group)
            done = loop.run_in_executor(self._pool, _encode, raw, item)
            done.add_done_callback(functools.partial(_settle, item.future))

    def _step_hook(self, group: list[_Item]) -> OnStep | None:
        """A hook for the model's thread: it interrupts the call once every request of the
        group must stop, and announces the group's steps from the event loop, at most every
        `STEP_REPORT_EVERY_S` and at the last step, with an estimate of the time left from
        the pace so far."""
        ids = [item.request_id for item in group if item.request_id is not None]
        stopping = self._stopping if ids and len(ids) == len(group) else None
        progress = self._progress if ids else None
        if stopping is None and progress is None:
            return None
        loop, started, last = asyncio.get_running_loop(), time.monotonic(), 0.0

        def on_step(done: int, total: int) -> None:
            nonlocal last
            if stopping is not None and all(stopping(rid) is not None for rid in ids):
                raise Interrupted(f"stopped after denoising step {done} of {total}")
            now = time.monotonic()
            if progress is None or (done < total and now - last < STEP_REPORT_EVERY_S):
                return
            last = now
            eta = (now - started) / done * (total - done) if done else None
            loop.call_soon_threadsafe(self._announce, ids, done, total, eta)

        return on_step

    def _announce(self, ids: list[str], done: int, total: int, eta: float | None) -> None:
        assert self._progress is not None
        task = asyncio.create_task(self._progress.steps(ids, done, total, eta))
        self._reports.add(task)  # held until sent: the loop keeps only weak references
        task.add_done_callback(self._reports.discard)


def _observe_model(group: list[_Item], elapsed: float) -> None:
    metrics.BATCH_SIZE.observe(len(group))
    for _ in group:
        metrics.STAGE_SECONDS.labels("model").observe(elapsed / len(group))
    if elapsed > 0:
        metrics.REALTIME_FACTOR.set(sum(item.job.duration_s for item in group) / elapsed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        metrics.GPU_MEMORY.labels("peak_allocated").set(torch.cuda.max_memory_allocated())
        metrics.GPU_MEMORY.labels("reserved").set(torch.cuda.memory_reserved())
        torch.cuda.reset_peak_memory_stats()


def _fail(group: list[_Item], exc: BaseException) -> None:
    for item in group:
        if not item.future.done():
            item.future.set_exception(exc)


def _settle(target: asyncio.Future[Encoded], source: asyncio.Future[Encoded]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())
