"""``acesteps list`` against the API app in-process (real store, fake Kafka)."""

from __future__ import annotations

import io
import json
from typing import Any

from acesteps.cli.api import ApiClient, open_session
from acesteps.cli.listing import list_records
from acesteps.cli.main import build_parser
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
