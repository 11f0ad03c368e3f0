"""``python -m generator`` whose producer stops before one commit, for the crash test.

The same service from the same environment: `acesteps.service.main` runs
`generator.service.run_generator`. The one difference is the transactional producer the
consume loop builds: its ``GENTEST_PAUSE_AT_COMMIT``-th ``commit_transaction`` first waits
until every output of the batch is acknowledged by the broker (written, in the open
transaction), then creates the file ``GENTEST_MARKER`` and sleeps until SIGKILL. So the test
can kill the worker between produce and commit, which a plain kill hits only by chance. The
pause lives here, not in the library.

    GENTEST_PAUSE_AT_COMMIT=2 GENTEST_MARKER=/tmp/m ACESTEPS_... \\
        python -m tests.integration.generator_worker
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path

from aiokafka import AIOKafkaProducer

import acesteps.kafka.loop
from acesteps.kafka.producer import transactional_producer
from acesteps.service import main
from generator.service import run_generator
from generator.settings import GeneratorSettings

PAUSE_AT = int(os.environ["GENTEST_PAUSE_AT_COMMIT"])
MARKER = Path(os.environ["GENTEST_MARKER"])
_commits = 0  # over every producer of the process: the loop replaces a broken one


class PausingProducer(AIOKafkaProducer):  # type: ignore[misc]
    async def commit_transaction(self) -> None:
        global _commits
        _commits += 1
        if _commits == PAUSE_AT:
            await self.flush()  # the outputs are on the broker, in the open transaction
            await asyncio.to_thread(MARKER.touch)
            await asyncio.Event().wait()  # until SIGKILL
        await super().commit_transaction()


# The loop calls the factory by this name when it builds (or replaces) its producer.
acesteps.kafka.loop.transactional_producer = functools.partial(  # type: ignore[attr-defined]
    transactional_producer, cls=PausingProducer
)

if __name__ == "__main__":
    raise SystemExit(main("generator", GeneratorSettings, run_generator))
