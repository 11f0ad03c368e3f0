"""Editing from the command line: ``acesteps upload FILE`` and ``acesteps generate --task``
(with ``--source-track``, ``--source-upload`` or ``--source-file``), against a fake API
served in-process on loopback."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from acesteps.cli import generate as client
from acesteps.cli.main import build_parser
from acesteps.cli.options import options_body
from acesteps.cli.upload import upload
from acesteps.hashing import keccak256_hex
from tests.unit.fakeserver import Served, serving

RID = "0x" + "ed" * 32
SOURCE_ID = "0x" + "50" * 32
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SONG = b"RIFF not really a wav " * 100


def uploaded(data: bytes, audio_hash: str | None = None) -> dict[str, Any]:
    return {
        "cid": CID,
        "audioHash": audio_hash or keccak256_hex(data),
        "duration": 12.5,
        "sampleRate": 44100,
        "channels": 2,
        "format": "wav",
        "sizeBytes": len(data),
    }


@dataclass
class FakeApi:
    """``POST /api/uploads`` and ``POST /api/generate``, answering ``answers`` first."""

    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    stored_hash: str | None = None

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        part = form["file"]
        assert isinstance(part, web.FileField)
        data = part.file.read()
        self.uploads.append(
            {
                "name": part.filename,
                "type": part.content_type,
                "data": data,
                "auth": request.headers.get("Authorization"),
            }
        )
        if self.answers:
            status, body, headers = self.answers.pop(0)
            return web.json_response(body, status=status, headers=headers)
        return web.json_response(uploaded(data, self.stored_hash), status=201)

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        record: dict[str, Any] = {"id": RID, "status": "queued", **body}
        if "sourceTrack" in body:
            source = {"kind": "track", "requestId": body["sourceTrack"], "cid": CID}
        else:
            source = {"kind": "upload", "cid": body.get("sourceUpload")}
        record["editSource"] = {**source, "audioHash": "0x" + "aa" * 32, "durationS": 12.5}
        return web.json_response(record, status=202)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/uploads", self.upload)
        app.router.add_post("/api/generate", self.generate)
        return app


Api = Served[FakeApi]


@pytest.fixture
async def served() -> AsyncIterator[Api]:
    async with serving(FakeApi()) as running:
        yield running


async def run_upload(served: Api, path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await upload(served.api, path, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- upload


async def test_upload_sends_the_file_as_the_part_file_and_prints_the_answer(
    served: Api, tmp_path: Path
) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(SONG)

    code, out, err = await run_upload(served, song)

    assert code == 0, err
    assert json.loads(out) == uploaded(SONG)
    [sent] = served.fake.uploads
    assert sent["name"] == "song.wav" and sent["data"] == SONG
    assert sent["type"] in ("audio/wav", "audio/x-wav")
    assert sent["auth"] == "Bearer s3cret"
    assert f"uploaded song.wav: CID {CID}, 12.5 s wav" in err
    assert "(the file's keccak256)" in err
    assert f"--source-upload {CID}" in err


async def test_upload_says_when_the_api_stored_other_bytes(served: Api, tmp_path: Path) -> None:
    song = tmp_path / "song.mp3"
    song.write_bytes(SONG)
    served.fake.stored_hash = "0x" + "00" * 32

    code, _, err = await run_upload(served, song)

    assert code == 0
    assert f"NOT the file's keccak256 {keccak256_hex(SONG)}" in err


@pytest.mark.parametrize(
    ("status", "code"),
    [(413, "upload_too_large"), (415, "unsupported_audio"), (422, "upload_too_long")],
)
async def test_a_refused_upload_exits_2_with_the_apis_reason(
    served: Api, tmp_path: Path, status: int, code: str
) -> None:
    song = tmp_path / "song.flac"
    song.write_bytes(SONG)
    error = {"code": code, "message": "no", "field": "file"}
    served.fake.answers = [(status, {"error": error}, {})]

    exit_code, out, err = await run_upload(served, song)

    assert exit_code == 2 and out == ""
    assert f"error: {code}: no" in err


async def test_a_rate_limited_upload_sends_the_whole_form_again(
    served: Api, tmp_path: Path
) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(SONG)
    limited = {"error": {"code": "rate_limited", "message": "slow down"}}
    served.fake.answers = [(429, limited, {"Retry-After": "2"})]

    code, out, err = await run_upload(served, song)

    assert code == 0, err
    assert served.slept == [2.0]
    assert [u["data"] for u in served.fake.uploads] == [SONG, SONG]
    assert json.loads(out)["cid"] == CID


async def test_an_unreadable_file_exits_2_without_asking(served: Api, tmp_path: Path) -> None:
    code, _, err = await run_upload(served, tmp_path / "missing.wav")
    assert code == 2 and "error: cannot read" in err
    assert served.fake.uploads == []


# ---------------------------------------------------------------- generate --task


def test_an_edit_sends_no_duration_unless_given() -> None:
    argv = ["generate", "more", "--task", "extend", "--source-track", SOURCE_ID]
    args = build_parser().parse_args([*argv, "--extend-after", "10"])
    assert options_body(args) == {
        "prompt": "more",
        "task": "extend",
        "sourceTrack": SOURCE_ID,
        "extendAfter": 10.0,
    }
    args = build_parser().parse_args([*argv, "--repaint-start", "1", "--duration", "20"])
    assert options_body(args)["duration"] == 20.0  # given: sent (the API says what it thinks)


async def test_generate_prints_what_an_edit_edits(served: Api, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    body = {"prompt": "more", "task": "extend", "sourceTrack": SOURCE_ID, "extendAfter": 10}
    opts = client.GenerateOptions(body, wait=False)

    code = await client.generate(served.api, opts, stdout=out, stderr=err)

    assert code == 0, err.getvalue()
    assert served.fake.bodies == [body]
    assert f"edit: extend of track {SOURCE_ID} (audioHash 0x{'aa' * 32})" in err.getvalue()
    record = json.loads(out.getvalue())
    assert "edit     " not in client.render_status({**record, "editSource": None})
    assert f"edit       extend of track {SOURCE_ID}" in client.render_status(record)


async def test_generate_source_file_uploads_then_edits_it(served: Api, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(SONG)
    out, err = io.StringIO(), io.StringIO()
    body = {"prompt": "a cover", "task": "cover"}
    opts = client.GenerateOptions(body, wait=False, source_file=song)

    code = await client.generate(served.api, opts, stdout=out, stderr=err)

    assert code == 0, err.getvalue()
    assert [u["data"] for u in served.fake.uploads] == [SONG]
    assert served.fake.bodies == [{**body, "sourceUpload": CID}]
    assert f"edit: cover of upload {CID}" in err.getvalue()

    missing = client.GenerateOptions(body, wait=False, source_file=tmp_path / "gone.wav")
    assert await client.generate(served.api, missing, stdout=out, stderr=err) == 2
    assert "error: --source-file: " in err.getvalue() and len(served.fake.bodies) == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "give --task too"),
        (["--task", "cover", "--source-track", SOURCE_ID], "give one source"),
    ],
)
async def test_source_file_needs_a_task_and_no_other_source(
    served: Api,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    says: str,
) -> None:
    argv = ["generate", "x", "--source-file", str(tmp_path / "a.wav"), "--api-url", served.url]
    assert await client.run_generate_cli(build_parser().parse_args([*argv, *extra])) == 2
    assert says in capsys.readouterr().err
    assert served.fake.uploads == [] and served.fake.bodies == []
