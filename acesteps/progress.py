"""Advisory progress announcements on ``PREFIX.progress.v1`` (see `acesteps.topics`).

Workers call `ProgressReporter.report` when they start on a request, and the generator
`ProgressReporter.steps` as its model's denoising steps pass. The record is sent by an
idempotent producer outside the worker's transaction, so the status projection can show
``generating`` or ``publishing`` while the work runs. It is a hint: a failure to send is
logged and ignored, and never delays or fails the work itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Literal, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from acesteps.kafka.producer import idempotent_producer, send_message
from acesteps.messages import GenerationProgress

__all__ = ["NoProgress", "Progress", "ProgressReporter"]

log = logging.getLogger(__name__)

Stage = Literal["generating", "publishing"]
SEND_TIMEOUT_S = 5.0


class Progress(Protocol):
    async def report(self, request_ids: Iterable[str], stage: Stage) -> None: ...

    async def steps(
        self, request_ids: Iterable[str], step: int, steps: int, eta_s: float | None
    ) -> None: ...


class NoProgress:
    """Reports nothing (tests, tools)."""

    async def report(self, request_ids: Iterable[str], stage: Stage) -> None:
        return None

    async def steps(
        self, request_ids: Iterable[str], step: int, steps: int, eta_s: float | None
    ) -> None:
        return None


class ProgressReporter:
    def __init__(self, bootstrap: str, topic: str, worker: str, client_id: str = "acesteps"):
        self._producer: AIOKafkaProducer = idempotent_producer(
            bootstrap, client_id=client_id, linger_ms=0
        )
        self._topic = topic
        self._worker = worker

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def report(self, request_ids: Iterable[str], stage: Stage) -> None:
        await self._send(
            [
                GenerationProgress(request_id=r, stage=stage, worker=self._worker)
                for r in request_ids
            ]
        )

    async def steps(
        self, request_ids: Iterable[str], step: int, steps: int, eta_s: float | None
    ) -> None:
        await self._send(
            [
                GenerationProgress(
                    request_id=r,
                    stage="generating",
                    worker=self._worker,
                    step=step,
                    steps=steps,
                    eta_s=None if eta_s is None else round(eta_s, 2),
                )
                for r in request_ids
            ]
        )

    async def _send(self, messages: list[GenerationProgress]) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                futures = [
                    await send_message(self._producer, self._topic, m.request_id, m)
                    for m in messages
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, ValueError) as exc:
            log.warning("progress not announced: %r", exc)
