"""``python -m publisher`` whose audio loop stops before committing its first published track.

The same service from the same environment: `acesteps.service.main` runs
`publisher.service.run_publisher`. The one difference is the transactional producer of the
audio loop (`acesteps.kafka.pipelined`): the first ``commit_transaction`` of a transaction
that wrote to ``PREFIX.tracks.v1`` first waits until every output is acknowledged by the
broker (written, in the open transaction), then creates the file ``PUBTEST_MARKER`` and
sleeps until SIGKILL. So the test can kill the publisher after its registrations are
confirmed and before the Kafka transaction that announces them commits.

    PUBTEST_MARKER=/tmp/m ACESTEPS_... python -m tests.integration.publisher_worker
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

import acesteps.kafka.pipelined
from acesteps.kafka.producer import transactional_producer
from acesteps.service import main
from publisher.service import run_publisher
from publisher.settings import PublisherSettings

MARKER = Path(os.environ["PUBTEST_MARKER"])


_paused = False  # over every producer of the process: the loop replaces a broken one


class PausingProducer(AIOKafkaProducer):  # type: ignore[misc]
    wrote_tracks = False

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        self.wrote_tracks = self.wrote_tracks or topic.endswith(".tracks.v1")
        return await super().send(topic, *args, **kwargs)

    async def commit_transaction(self) -> None:
        global _paused
        if self.wrote_tracks and not _paused:
            _paused = True
            await self.flush()  # the outputs are on the broker, in the open transaction
            await asyncio.to_thread(MARKER.touch)
            await asyncio.Event().wait()  # until SIGKILL
        self.wrote_tracks = False
        await super().commit_transaction()


# The audio loop calls the factory by this name when it builds (or replaces) its producer.
acesteps.kafka.pipelined.transactional_producer = functools.partial(  # type: ignore[attr-defined]
    transactional_producer, cls=PausingProducer
)

if __name__ == "__main__":
    raise SystemExit(main("publisher", PublisherSettings, run_publisher))
