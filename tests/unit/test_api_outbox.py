"""The API's outbox: accepted requests the projection has not read back are sent again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from acesteps.messages import GenerationRequest
from listener.api.models import Generation, Status
from listener.api.outbox import Outbox
from listener.api.sqlitestore import SqliteStore
from listener.api.store import submit


class Submitter:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    async def submit(self, request: GenerationRequest) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.sent.append(request.request_id)


def request(n: int) -> GenerationRequest:
    return GenerationRequest(
        request_id="0x" + f"{n:064x}",
        source="http",
        prompt=f"song {n}",
        duration_s=10,
        requester="key-1",
    )


async def accepted(store: SqliteStore, req: GenerationRequest) -> None:
    queued = Generation(id=req.request_id, status=Status.QUEUED, source="http", prompt="x")
    await submit(store, queued, "fp", req.model_dump_json())


async def test_a_sweep_sends_what_was_not_read_back_and_stops_on_a_refusal(
    tmp_path: Path,
) -> None:
    store = await SqliteStore(tmp_path / "s.sqlite3").open()
    try:
        kafka = Submitter()
        for n in (1, 2, 3):
            await accepted(store, request(n))
        await store.apply([(request(2).request_id, request(2))], {})  # read back: nothing to do
        outbox = Outbox(store, kafka, resend_after_s=0.2, every_s=0.05)
        assert await outbox.sweep() == 0  # too young: the first send may still be on its way
        await asyncio.sleep(0.3)
        kafka.down = True
        assert await outbox.sweep() == 0 and kafka.sent == []
        kafka.down = False
        assert await outbox.sweep() == 2
        assert kafka.sent == [request(1).request_id, request(3).request_id]
        # Until the projection reads them back, they are sent again; then never.
        await store.apply([(r.request_id, r) for r in (request(1), request(3))], {})
        stop = asyncio.Event()
        running = asyncio.create_task(outbox.run(stop))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(running, 1)
        assert len(kafka.sent) == 2
    finally:
        await store.close()
