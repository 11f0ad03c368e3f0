"""``python -m listener`` whose API stops for good right after it has committed a request to
its status store and before Kafka has it: the outbox crash test kills it there.

The same service from the same environment (`acesteps.service.main` runs
`listener.service.run_listener`); the one difference is the API's Kafka submitter: its first submit
writes the request id to ``APITEST_MARKER`` and never returns. The pause lives here, not in
the library.

    APITEST_MARKER=/tmp/m ACESTEPS_... python -m tests.integration.api_worker
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import listener.api.service
from acesteps.messages import GenerationRequest
from acesteps.service import main
from listener.service import run_listener
from listener.settings import ListenerSettings

MARKER = Path(os.environ["APITEST_MARKER"])


class HangingSubmitter(listener.api.service.KafkaSubmitter):
    async def submit(self, request: GenerationRequest) -> None:
        await asyncio.to_thread(MARKER.write_text, request.request_id)
        await asyncio.Event().wait()  # until SIGKILL


listener.api.service.KafkaSubmitter = HangingSubmitter  # type: ignore[misc]

if __name__ == "__main__":
    raise SystemExit(main("listener", ListenerSettings, run_listener))
