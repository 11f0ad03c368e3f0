"""Editing on the pages, without a browser: the main page's controls (the edit box, "Upload a
source", Extend/Repaint/Cover), its script static/edits.js under Node.js against the rules of
`acesteps.options`, and a track page's lineage and edit links (in-process,
`tests.unit.apiapp`). The page in Chromium: tests/integration/test_webpage_edits.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from acesteps.editing import EDIT_TASKS, EditSource
from acesteps.options import _EDIT_PARAMETERS, GenerationOptions, api_name
from tests.factories import track_published
from tests.unit.apiapp import BODY

STATIC = Path(__file__).resolve().parents[2] / "listener" / "api" / "static"
SOURCE_ID = "0x" + "50" * 32
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def edits(calls: str) -> Any:
    """Run static/edits.js in Node.js, then ``calls`` (a JS expression with ``E``, its
    exports); the value as JSON."""
    if shutil.which("node") is None:
        pytest.fail("node not found: Node.js 20+ runs the page's scripts")
    script = (
        "const vm = require('vm'); globalThis.window = globalThis;\n"
        f"vm.runInThisContext(require('fs').readFileSync({json.dumps(str(STATIC / 'edits.js'))},"
        " 'utf8'));\n"
        f"const E = window.AceSteps.edits;\nconsole.log(JSON.stringify({calls}));"
    )
    done = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_script_knows_the_edit_options_of_each_task() -> None:
    got = edits("{tasks: E.TASK_OPTIONS, sources: E.SOURCES, all: E.EDIT_OPTIONS}")
    assert got["tasks"] == {
        task: [api_name(name) for name in names] for task, names in _EDIT_PARAMETERS.items()
    }
    assert sorted(got["tasks"]) == sorted(EDIT_TASKS)
    assert got["sources"] == [api_name("source_track"), api_name("source_upload")]
    assert set(got["all"]) <= {api_name(n) for n in GenerationOptions.model_fields}


def test_an_edit_sends_no_duration_and_only_its_tasks_options() -> None:
    form = {
        "prompt": "more of it",
        "duration": 30,
        "format": "mp3",
        "task": "extend",
        "sourceTrack": SOURCE_ID,
        "extendAfter": 10,
        "repaintStart": 1,  # left in a field hidden since another task was chosen
        "coverStrength": 0.5,
    }
    plain = {"prompt": "new", "duration": 30, "repaintEnd": 3, "sourceUpload": CID}
    got = edits(f"[E.editBody({json.dumps(form)}), E.editBody({json.dumps(plain)})]")
    assert got[0] == {
        "prompt": "more of it",
        "format": "mp3",
        "task": "extend",
        "sourceTrack": SOURCE_ID,
        "extendAfter": 10,
    }
    assert got[1] == {"prompt": "new", "duration": 30}  # no task: no edit options
    # What it sends is a request the service's own rules accept.
    fields = {api_name(name): name for name in GenerationOptions.model_fields}
    GenerationOptions.model_validate({fields[name]: value for name, value in got[0].items()})


def test_the_form_shows_a_tasks_options_only_with_it() -> None:
    got = edits(
        "['', 'repaint', 'extend', 'cover'].map((t) => Object.fromEntries("
        "['task', 'sourceTrack', 'repaintStart', 'extendAfter', 'coverStrength', 'seed']"
        ".map((n) => [n, E.shown(n, t)])))"
    )
    none, repaint, extend, cover = got
    assert none == {
        "task": True,
        "sourceTrack": False,
        "repaintStart": False,
        "extendAfter": False,
        "coverStrength": False,
        "seed": True,
    }
    assert repaint["repaintStart"] and not repaint["extendAfter"] and repaint["sourceTrack"]
    assert extend["extendAfter"] and not extend["coverStrength"]
    assert cover["coverStrength"] and not cover["repaintStart"]


def test_prefill_and_lineage() -> None:
    track = {"kind": "track", "requestId": SOURCE_ID, "cid": CID, "audioHash": "0x" + "aa" * 32}
    resolved = {"task": "repaint", "editSource": {**track, "durationS": 9}}
    got = edits(
        "[E.prefill('extend', 'ID'), E.prefill('nonsense', 'ID'),"
        f" E.lineage({json.dumps(resolved)}),"
        f" E.lineage({{task: 'cover', sourceUpload: {json.dumps(CID)}}}),"
        " E.lineage({prompt: 'no edit'})]"
    )
    assert got[0] == {"task": "extend", "sourceTrack": "ID", "sourceUpload": ""}
    assert got[1] is None
    assert got[2] == {
        "task": "repaint",
        "kind": "track",
        "requestId": SOURCE_ID,
        "cid": CID,
        "audioHash": "0x" + "aa" * 32,
    }
    assert got[3] == {
        "task": "cover",
        "kind": "upload",
        "requestId": None,
        "cid": CID,
        "audioHash": None,
    }
    assert got[4] is None


class Ids(HTMLParser):
    """Every element's id and data-testid, and the scripts, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "data-testid"):
            if a.get(key):
                self.ids[str(a[key])] = {"tag": tag, **a}
        if tag == "script" and a.get("src"):
            self.scripts.append(str(a["src"]))


async def test_the_main_page_has_the_edit_controls(make_client: Any) -> None:
    client, _, _ = await make_client()
    page = Ids()
    page.feed(await (await client.get("/")).text())
    # edits.js before app.js, which uses it
    assert page.scripts.index("static/edits.js") < page.scripts.index("static/app.js")
    assert page.ids["edit-box"]["tag"] == "fieldset" and "hidden" in page.ids["edit-box"]
    upload = page.ids["source-file"]
    assert upload["tag"] == "input" and upload["type"] == "file"
    assert page.ids["duration-field"]["tag"] == "div"
    assert "hidden" in page.ids["edit-actions"]  # a button per task: app.js, from the task's enum
    assert {"lineage", "verify-edit", "source-file-status", "source-file-error"} <= page.ids.keys()
    script = await client.get("/static/edits.js")
    assert script.status == 200 and "AceSteps.edits" in await script.text()


async def test_a_track_page_links_to_its_source_and_offers_to_edit_it(make_client: Any) -> None:
    client, deps, kafka = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    source = EditSource(
        kind="track", request_id=SOURCE_ID, cid=CID, audio_hash="0x" + "aa" * 32, duration_s=9
    )
    edit = kafka.sent[0].model_copy(
        update={
            "task": "extend",
            "source_track": SOURCE_ID,
            "extend_after": 5.0,
            "edit_source": source,
        }
    )
    await deps.store.apply([(rid, edit), (rid, track_published(rid))], {})

    html = await (await client.get(f"/tracks/{rid}")).text()
    page = Ids()
    page.feed(html)

    assert page.ids["source-link"]["href"] == f"../tracks/{SOURCE_ID}"
    assert "Extend of track" in html
    for task in EDIT_TASKS:
        assert page.ids[f"edit-{task}"]["href"] == f"../?task={task}&sourceTrack={rid}"

    plain = (await (await client.post("/api/generate", json={**BODY, "seed": 3})).json())["id"]
    request = next(r for r in kafka.sent if r.request_id == plain)
    await deps.store.apply([(plain, request), (plain, track_published(plain))], {})
    page = Ids()
    page.feed(await (await client.get(f"/tracks/{plain}")).text())
    assert "source-link" not in page.ids and "edit" not in page.ids
    assert "edit-extend" in page.ids  # any finished track can be edited
