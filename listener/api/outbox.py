"""Sends again what the API accepted but Kafka may never have received.

``POST /api/generate`` commits the request to the status store (with its record, the outbox)
before it sends the record to ``PREFIX.requests.v1``. A process that dies between the two, or
a send whose acknowledgement is lost, would otherwise leave the request ``queued`` forever. On
start and then every ``every_s``, the records of requests older than ``resend_after_s`` that
the projection has not read back from Kafka are sent again; once the projection reads a
request, its outbox entry is cleared. A record may so reach the topic twice (its first send
did arrive, the projection was behind): the same request id, handled as one downstream
(the generator makes the same bytes, the publisher registers a request once).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from acesteps.messages import GenerationRequest
from listener.api.deps import Submitter
from listener.api.store import Store

__all__ = ["Outbox"]

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self, store: Store, submitter: Submitter, resend_after_s: float, every_s: float
    ) -> None:
        self.store = store
        self.submitter = submitter
        self.resend_after = timedelta(seconds=resend_after_s)
        self.every_s = every_s

    async def sweep(self) -> int:
        """Send the unsent requests once; how many were sent."""
        sent = 0
        for doc in await self.store.unsent(datetime.now(UTC) - self.resend_after):
            request = GenerationRequest.model_validate_json(doc)
            try:
                await self.submitter.submit(request)
            except Exception as exc:  # Kafka down: the next sweep tries again
                log.warning("re-sending request %s failed (%r)", request.request_id, exc)
                break
            sent += 1
            log.info("re-sent request %s, not read back from Kafka", request.request_id)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the store unreachable for a moment: never stop the API
                log.exception("the outbox sweep failed")
            try:
                await asyncio.wait_for(stop.wait(), self.every_s)
            except TimeoutError:
                pass
