"""The API client behind ``acesteps generate`` and ``acesteps status``: event-stream parsing,
progress rendering, and exit codes, against a fake API served in-process on loopback."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from acesteps.cli import generate as client
from acesteps.cli import sse
from acesteps.cli.api import ApiClient, ApiError, open_session
from acesteps.cli.generate import GenerateOptions
from acesteps.cli.main import build_parser
from acesteps.cli.options import options_body
from acesteps.cli.progressbar import Progress, render_bar
from acesteps.cli.sse import SseEvent, sse_events
from acesteps.hashing import keccak256_hex
from acesteps.settings import ClientSettings, load_settings
from tests.unit.fakeserver import Served, serving

RID = "0x" + "ab" * 32
AUDIO = b"ID3 not really an mp3 " * 1000


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _parse(parts: Iterable[bytes]) -> list[SseEvent]:
    return [e async for e in sse_events(_chunks(parts))]


# ---------------------------------------------------------------- SSE


async def test_sse_events_in_any_chunking() -> None:
    stream = (
        b": keep-alive\n\n"
        b'id: 1\nevent: status\ndata: {"a": 1}\n\n'
        b": keep-alive\n\n"
        b'id: 2\r\nevent: status\r\ndata:{"a": 2}\r\n\r\n'
        b"data: line one\rdata: line two\r\r"
    )
    expected = [
        SseEvent("status", '{"a": 1}', "1"),
        SseEvent("status", '{"a": 2}', "2"),
        SseEvent("message", "line one\nline two", "2"),
    ]
    assert await _parse([stream]) == expected
    # one byte at a time: CRLF split across chunks must not make an empty line
    assert await _parse([stream[i : i + 1] for i in range(len(stream))]) == expected


async def test_sse_skips_events_without_data_and_drops_an_unfinished_one() -> None:
    events = await _parse([b"\xef\xbb\xbfevent: status\n\n", b"data: kept\n\n", b"data: cut"])
    assert events == [SseEvent("message", "kept", None)]


async def test_sse_refuses_an_endless_line() -> None:
    with pytest.raises(ValueError, match="longer than"):
        await _parse([b"data: " + b"x" * (sse.MAX_LINE + 10)])


# ---------------------------------------------------------------- progress


def test_render_bar_fills_the_generating_stage_with_the_model_steps() -> None:
    half = render_bar("generating", 1, 3.0, width=8, percent=50.0, eta_s=2.4)
    assert half.startswith("[###-----] 2/4 generating  50% ~2s left")
    assert render_bar("generating", 1, 3.0, width=8, percent=100.0).startswith("[####----]")
    assert "%" not in render_bar("publishing", 2, 3.0, width=8, percent=100.0)


def test_render_bar_fills_by_stage() -> None:
    queued = render_bar("queued", 0, 0.0, width=8)
    assert queued.startswith("[##------] 1/4 queued")
    assert render_bar("publishing", 2, 12.4, width=8).startswith("[######--] 3/4 publishing")
    assert render_bar("completed", 3, 61, width=8).rstrip().endswith("61s")
    assert render_bar("completed", 3, 61, width=8).startswith("[########] 4/4")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_plain_prints_one_line_per_change() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(out, live=False, clock=clock)
    progress.update("queued")
    clock.now += 1.5
    progress.update("queued")
    progress.update("generating")
    progress.tick()
    clock.now += 2
    progress.update("failed")
    progress.close()
    assert out.getvalue().splitlines() == [
        "[   0.0s] queued",
        "[   1.5s] generating",
        "[   3.5s] failed",
    ]


def test_progress_live_redraws_one_line_and_keeps_the_furthest_stage() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(out, live=True, clock=clock)
    progress.update("generating")
    clock.now += 7
    progress.tick()
    progress.update("failed")
    progress.close()
    text = out.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) == 3
    assert frames[1].startswith(render_bar("generating", 1, 7))
    # a failure after generating leaves the bar at generating
    assert frames[2].startswith("[############------------] 2/4 failed")


# ---------------------------------------------------------------- a fake API


def _record(status: str, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": RID,
        "status": status,
        "prompt": "chill lofi",
        "format": "mp3",
        "audioUrl": None,
        "audioHash": None,
        "cid": None,
        "txHash": None,
        "error": None,
    }
    if status == "completed":
        record.update(audioHash=keccak256_hex(AUDIO), cid="bafkreiabc", txHash="0x" + "12" * 32)
    record.update(extra)
    return record


def _internal() -> web.Response:
    error = {"code": "internal", "message": "internal error"}
    return web.json_response({"error": error}, status=500)


@dataclass
class FakeApi:
    """Plays the API: ``posts`` answers in turn, then ``stages`` as events and polls."""

    stages: list[str] = field(default_factory=lambda: ["queued", "generating", "completed"])
    post_answers: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    break_stream_after: int | None = None
    final: dict[str, Any] | None = None
    audio: bytes = AUDIO
    seen: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    polls: int = 0
    reads_fail: bool = False

    def record(self, status: str) -> dict[str, Any]:
        return self.final if self.final and status == self.final["status"] else _record(status)

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(("POST", request.path_qs, dict(request.headers), body))
        if self.post_answers:
            status, answer, headers = self.post_answers.pop(0)
            return web.json_response(answer, status=status, headers=headers)
        return web.json_response(
            _record("queued"), status=202, headers={"Location": f"/api/generations/{RID}"}
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(("GET", request.path, dict(request.headers), None))
        if self.reads_fail:
            return _internal()
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for n, status in enumerate(self.stages):
            if self.break_stream_after is not None and n >= self.break_stream_after:
                return stream  # the connection ends without a final status
            await stream.write(b": keep-alive\n\n")
            data = json.dumps(self.record(status))
            await stream.write(f"id: {n + 1}\nevent: status\ndata: {data}\n\n".encode())
            if status == "generating":  # the model's steps, as the API streams them
                for done in (4, 8):
                    steps = {"stepsDone": done, "stepsTotal": 8, "percent": done * 12.5}
                    steps["etaS"] = 8.0 - done
                    await stream.write(f"event: progress\ndata: {json.dumps(steps)}\n\n".encode())
        await stream.write_eof()
        return stream

    async def get(self, request: web.Request) -> web.Response:
        self.seen.append(("GET", request.path, dict(request.headers), None))
        if request.match_info["id"] != RID:
            error = {"code": "not_found", "message": f"no request {request.match_info['id']}"}
            return web.json_response({"error": error}, status=404)
        self.polls += 1
        if self.reads_fail:
            return _internal()
        status = self.stages[min(self.polls, len(self.stages)) - 1]
        return web.json_response(self.record(status))

    async def audio_file(self, request: web.Request) -> web.Response:
        self.seen.append(("GET", request.path, dict(request.headers), None))
        return web.Response(body=self.audio, content_type="audio/mpeg")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/generate", self.generate)
        app.router.add_get("/api/generations/{id}", self.get)
        app.router.add_get("/api/generations/{id}/events", self.events)
        app.router.add_get("/api/generations/{id}/audio", self.audio_file)
        return app


Api = Served[FakeApi]


@pytest.fixture
async def served() -> AsyncIterator[Api]:
    async with serving(FakeApi()) as running:
        yield running


async def _generate(
    served: Api,
    tmp_path: Path,
    idempotency_key: str | None = None,
    wait: bool = True,
    **options: Any,
) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    body = {"prompt": "chill lofi", "duration": 30, **options}
    opts = GenerateOptions(body, wait, tmp_path / "track.mp3", idempotency_key)
    code = await client.generate(
        served.api, opts, stdout=stdout, stderr=stderr, poll_s=0.0, sleep=served.api.sleep
    )
    return code, stdout.getvalue(), stderr.getvalue()


# ---------------------------------------------------------------- generate


async def test_generate_follows_events_downloads_and_checks(served: Api, tmp_path: Path) -> None:
    code, out, err = await _generate(
        served, tmp_path, tags=["lofi", "rain"], seed=7, idempotency_key="k1"
    )
    assert code == 0, err
    printed = json.loads(out)
    assert printed["file"] == str(tmp_path / "track.mp3")
    assert printed["audioHash"] == keccak256_hex(AUDIO)
    assert (tmp_path / "track.mp3").read_bytes() == AUDIO
    assert not (tmp_path / "track.mp3.part").exists()
    assert f"request {RID}" in err
    assert [line.split("] ")[1] for line in err.splitlines() if line.startswith("[")] == [
        "queued",
        "generating",
        "completed",
    ]
    method, path, headers, body = served.fake.seen[0]
    assert (method, path) == ("POST", "/api/generate?wait=0")
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Idempotency-Key"] == "k1"
    assert body == {"prompt": "chill lofi", "duration": 30, "tags": ["lofi", "rain"], "seed": 7}
    assert served.fake.polls == 0  # the stream was enough


async def test_a_broken_stream_falls_back_to_polling(served: Api, tmp_path: Path) -> None:
    served.fake.break_stream_after = 1
    served.fake.stages = ["queued", "generating", "publishing", "completed"]
    code, out, err = await _generate(served, tmp_path)
    assert code == 0, err
    assert "polling" in err
    assert served.fake.polls == 4
    assert json.loads(out)["status"] == "completed"


async def test_live_progress_on_a_terminal(served: Api, tmp_path: Path) -> None:
    stderr = _Tty()
    opts = GenerateOptions({"prompt": "x"}, out=tmp_path / "t.mp3")
    code = await client.generate(served.api, opts, stdout=io.StringIO(), stderr=stderr)
    assert code == 0, stderr.getvalue()
    frames = stderr.getvalue().split("\r")
    assert frames[-1].startswith("[########################] 4/4 completed")
    assert any(
        f.startswith("[#########---------------] 2/4 generating  50% ~4s left") for f in frames
    )


async def test_reads_failing_after_submit_exit_3(served: Api, tmp_path: Path) -> None:
    served.fake.reads_fail = True
    stderr = _Tty()
    opts = GenerateOptions({"prompt": "x"}, out=tmp_path / "t.mp3")
    code = await client.generate(
        served.api, opts, stdout=io.StringIO(), stderr=stderr, sleep=served.api.sleep
    )
    assert code == 3
    assert stderr.getvalue().endswith("error: internal: internal error\n")
    assert served.fake.polls == client.POLL_FAILURES + 1
    assert served.slept == [client.POLL_S] * client.POLL_FAILURES


async def test_no_wait_prints_the_queued_record(served: Api, tmp_path: Path) -> None:
    code, out, _ = await _generate(served, tmp_path, wait=False)
    assert code == 0
    assert json.loads(out)["status"] == "queued"
    assert [s[1] for s in served.fake.seen] == ["/api/generate?wait=0"]
    assert not (tmp_path / "track.mp3").exists()


async def test_a_failed_request_exits_1_with_its_error(served: Api, tmp_path: Path) -> None:
    error = {"stage": "generate", "code": "policy_refused", "message": "names an artist"}
    served.fake.stages = ["queued", "failed"]
    served.fake.final = _record("failed", error=error)
    code, out, err = await _generate(served, tmp_path)
    assert code == 1
    assert json.loads(out)["error"] == error
    assert "error: failed: policy_refused: names an artist (stage generate)" in err
    assert not (tmp_path / "track.mp3").exists()


async def test_audio_that_does_not_match_its_hash_is_not_kept(served: Api, tmp_path: Path) -> None:
    served.fake.audio = AUDIO + b"tampered"
    code, out, err = await _generate(served, tmp_path)
    assert code == 1
    assert out == ""
    assert "audio_mismatch" in err and keccak256_hex(AUDIO + b"tampered") in err
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [(422, "invalid_request", 2), (401, "unauthorized", 2), (500, "internal", 3)],
)
async def test_api_errors_map_to_exit_codes(
    served: Api, tmp_path: Path, status: int, code: str, exit_code: int
) -> None:
    error = {"code": code, "message": "duration: too short", "field": "duration"}
    served.fake.post_answers = [(status, {"error": error}, {})]
    rc, out, err = await _generate(served, tmp_path)
    assert rc == exit_code
    assert out == ""
    assert err.strip() == f"error: {code}: duration: too short"


async def test_an_answer_that_is_not_json_is_a_server_error(served: Api, tmp_path: Path) -> None:
    served.fake.post_answers = [(502, {}, {})]
    rc, _, err = await _generate(served, tmp_path)
    assert rc == 3
    assert "error: http_502" in err


def _limited(retry_after: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    error = {"code": "rate_limited", "message": "slow down"}
    return 429, {"error": error}, {"Retry-After": retry_after}


async def test_rate_limit_is_retried_after_retry_after(served: Api, tmp_path: Path) -> None:
    limited = (
        429,
        {"error": {"code": "rate_limited", "message": "slow down"}},
        {"Retry-After": "4"},
    )
    served.fake.post_answers = [limited, limited]
    code, _, err = await _generate(served, tmp_path)
    assert code == 0, err
    assert served.slept[:2] == [4.0, 4.0]
    assert sum(1 for s in served.fake.seen if s[0] == "POST") == 3


async def test_rate_limit_gives_up_after_three_retries(served: Api, tmp_path: Path) -> None:
    limited = (
        429,
        {"error": {"code": "rate_limited", "message": "slow down"}},
        {"Retry-After": "1"},
    )
    served.fake.post_answers = [limited] * 5
    code, _, err = await _generate(served, tmp_path)
    assert code == 2
    assert "error: rate_limited: slow down" in err
    assert served.slept == [1.0, 1.0, 1.0]
    assert sum(1 for s in served.fake.seen if s[0] == "POST") == 4


async def test_an_unreachable_api_exits_3(tmp_path: Path) -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await server.close()  # nothing listens there now
    stdout, stderr = io.StringIO(), io.StringIO()
    async with open_session(None) as session:
        code = await client.generate(
            ApiClient(session, url), GenerateOptions({"prompt": "x"}), stdout=stdout, stderr=stderr
        )
    assert code == 3
    assert stderr.getvalue().startswith("error: unreachable: POST ")


# ---------------------------------------------------------------- status


async def test_status_prints_a_summary_or_json(served: Api) -> None:
    served.fake.stages = ["completed"]
    out, err = io.StringIO(), io.StringIO()
    assert await client.status(served.api, RID, as_json=False, stdout=out, stderr=err) == 0
    summary = dict(line.split(None, 1) for line in out.getvalue().splitlines())
    assert summary["status"] == "completed"
    assert summary["audioHash"] == keccak256_hex(AUDIO)
    assert summary["prompt"] == "chill lofi"
    out = io.StringIO()
    assert await client.status(served.api, RID, as_json=True, stdout=out, stderr=err) == 0
    assert json.loads(out.getvalue())["txHash"] == "0x" + "12" * 32


def test_status_shows_the_queue_place_and_the_model_steps() -> None:
    queued = client.render_status(_record("queued", queuePosition=3))
    assert "queue      #3" in queued.splitlines()
    steps = {"stepsDone": 5, "stepsTotal": 8, "percent": 62.5, "etaS": 2.6}
    generating = client.render_status(_record("generating", progress=steps))
    assert "progress   62.5% (5/8 steps, ~3s left)" in generating.splitlines()
    assert "progress" not in client.render_status(_record("completed", progress=steps))


async def test_status_of_an_unknown_id_exits_1(served: Api) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await client.status(served.api, "0x" + "cd" * 32, as_json=True, stdout=out, stderr=err)
    assert code == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith("error: not_found: no request 0xcdcd")


async def test_status_refuses_a_malformed_id_without_asking(served: Api) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await client.status(served.api, "../../x", as_json=False, stdout=out, stderr=err)
    assert code == 2
    assert "invalid_id" in err.getvalue()
    assert served.fake.seen == []


# ---------------------------------------------------------------- command line


def test_generate_arguments() -> None:
    args = build_parser().parse_args(["generate", "beat", "--tags", " lofi, ,rain "])
    # Options not given are not sent: the server's defaults apply.
    assert options_body(args) == {"prompt": "beat", "tags": ["lofi", "rain"]}
    assert args.wait is True
    args = build_parser().parse_args(["generate", "beat", "--duration", "12.5", "--seed", "7"])
    assert options_body(args) == {"prompt": "beat", "duration": 12.5, "seed": 7}
    assert build_parser().parse_args(["generate", "beat", "--no-wait"]).wait is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "beat", "--format", "ogg"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "beat", "--duration", "nan"])


async def test_cli_takes_url_and_key_from_the_environment(
    served: Api,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ACESTEPS_API_URL", served.url + "/")
    monkeypatch.setenv("ACESTEPS_API_KEY", "from-env")
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("la la la\n", encoding="utf-8")
    argv = ["generate", "beat", "--tags", " lofi, ,rain ", "--lyrics-file", str(lyrics)]
    args = build_parser().parse_args([*argv, "--no-wait", "--duration", "12.5"])
    assert await client.run_generate_cli(args) == 0
    _, _, headers, body = served.fake.seen[0]
    assert headers["Authorization"] == "Bearer from-env"
    assert body["tags"] == ["lofi", "rain"]
    assert body["lyrics"] == "la la la\n"
    assert body["duration"] == 12.5
    assert json.loads(capsys.readouterr().out)["id"] == RID


async def test_cli_option_beats_the_environment_and_bad_urls_exit_2(
    served: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACESTEPS_API_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("ACESTEPS_API_KEY", raising=False)
    args = build_parser().parse_args(["status", RID, "--api-url", served.url, "--api-key", "k"])
    assert await client.run_status_cli(args) == 0
    assert served.fake.seen[0][2]["Authorization"] == "Bearer k"
    capsys.readouterr()
    bad = argparse.Namespace(id=RID, json=False, api_url="ftp://x", api_key=None)
    assert await client.run_status_cli(bad) == 2
    assert "--api-url" in capsys.readouterr().err


def test_a_bad_api_url_in_the_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACESTEPS_API_URL", "ftp://x")
    with pytest.raises(SystemExit) as exc:
        load_settings(ClientSettings)
    assert exc.value.code == 2
    assert "ACESTEPS_API_URL" in capsys.readouterr().err


def test_api_error_exit_codes() -> None:
    assert ApiError(404, "not_found", "x").exit_code == 2
    assert ApiError(503, "unavailable", "x").exit_code == 3
    assert ApiError(None, "unreachable", "x").exit_code == 3
