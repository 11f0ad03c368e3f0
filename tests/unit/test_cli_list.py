"""``acesteps list`` and ``acesteps cancel`` against the API app in-process (real store, fake
Kafka)."""

from __future__ import annotations

import io
import json
from typing import Any

from acesteps.cli.api import ApiClient, open_session
from acesteps.cli.cancel import cancel
from acesteps.cli.listing import list_records
from acesteps.cli.main import build_parser
from tests.factories import track_published
from tests.unit.apiapp import BODY


async def test_list_prints_the_newest_first_across_pages(make_client: Any) -> None:
    client, _, _ = await make_client(burst=1000, per_minute=60_000)
    ids = []
    for n in range(5):
        answer = await client.post("/api/generate", json={**BODY, "prompt": f"song {n}"})
        ids.append((await answer.json())["id"])
    url = str(client.make_url("")).rstrip("/")
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["list", "--limit", "4", "--json"])
    async with open_session(None) as session:
        code = await list_records(ApiClient(session, url), args, stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    listed = [json.loads(line)["id"] for line in out.getvalue().splitlines()]
    assert listed == ids[::-1][:4]

    out = io.StringIO()
    args = build_parser().parse_args(["list", "--status", "queued"])
    async with open_session(None) as session:
        assert await list_records(ApiClient(session, url), args, stdout=out, stderr=err) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[0].startswith(ids[-1]) and "song 4" in lines[0]

    bad = build_parser().parse_args(["list", "--status", "done"])
    async with open_session(None) as session:
        code = await list_records(ApiClient(session, url), bad, stdout=out, stderr=err)
    assert code != 0 and "status" in err.getvalue()


async def test_cancel_sends_the_cancel_and_says_when_it_is_too_late(make_client: Any) -> None:
    client, deps, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    url = str(client.make_url("")).rstrip("/")
    out, err = io.StringIO(), io.StringIO()
    async with open_session(None) as session:
        code = await cancel(ApiClient(session, url), rid, as_json=False, stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert out.getvalue() == f"{rid}: cancel accepted (it was queued)\n"
    assert [c.request_id for c in kafka.cancels] == [rid]

    await deps.store.apply([(rid, kafka.sent[0]), (rid, track_published(rid))], {})
    async with open_session(None) as session:
        code = await cancel(ApiClient(session, url), rid, as_json=True, stdout=out, stderr=err)
    assert code == 1 and "not_cancelable" in err.getvalue()
    assert len(kafka.cancels) == 1
    args = build_parser().parse_args(["cancel", rid, "--json"])
    assert args.id == rid and args.json
