"""Remote pins against a real loopback IPFS Pinning Service API server (aiohttp.web).

The server implements the subset the publisher uses (``POST /pins``, ``GET /pins?cid=``)
with Bearer auth, and records every request it gets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from acesteps.messages import TrackPublished, decode, encode
from publisher.remotepin import RemotePinner
from publisher.settings import PinningService, PublisherSettings

TOKEN = "s3cret-token-never-logged"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
OTHER_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@dataclass
class PinService:
    """State of the fake service: its pins, the requests it got, a forced answer."""

    token: str = TOKEN
    pins: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    force_status: int | None = None
    slow: bool = False  # GET waits for `release` (set at teardown)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    initial_status: str = "queued"
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/psa/pins", self.list_pins)
        app.router.add_post("/psa/pins", self.add_pin)
        return app

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.slow:
            return None
        if self.force_status is not None:
            return _failure(self.force_status, "FORCED")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _failure(401, "UNAUTHORIZED")
        return None

    async def list_pins(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path_qs, dict(request.headers), None))
        if self.slow:
            await self.release.wait()
        if (refused := self._refuse(request)) is not None:
            return refused
        cids = request.query.getall("cid", [])
        statuses = request.query.getall("status", ["pinned"])  # the spec's default
        found = [p for p in self.pins if p["pin"]["cid"] in cids and p["status"] in statuses]
        return web.json_response({"count": len(found), "results": found})

    async def add_pin(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", request.path_qs, dict(request.headers), body))
        if (refused := self._refuse(request)) is not None:
            return refused
        status = {
            "requestid": f"req-{len(self.pins)}",
            "status": self.initial_status,
            "created": "2025-01-01T00:00:00Z",
            "pin": body,
            "delegates": ["/dnsaddr/pin-service.example.com"],
        }
        self.pins.append(status)
        return web.json_response(status, status=202)

    def posts(self) -> list[Any]:
        return [body for method, _, _, body in self.requests if method == "POST"]


def _failure(status: int, reason: str) -> web.Response:
    return web.json_response({"error": {"reason": reason}}, status=status)


@pytest.fixture
async def service() -> AsyncIterator[PinService]:
    state = PinService()
    runner = web.AppRunner(state.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/psa"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


def _service(name: str, endpoint: str, token: str = TOKEN) -> PinningService:
    return PinningService(name=name, endpoint=endpoint, token=SecretStr(token))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_creates_a_pin_with_the_body_and_bearer_token(service: PinService) -> None:
    async with RemotePinner([_service("svc", service.url)]) as pinner:
        assert await pinner.pin_all(CID, "acesteps-0x01") == {"svc": "queued"}
    assert service.posts() == [{"cid": CID, "name": "acesteps-0x01"}]
    for method, path, headers, _ in service.requests:
        assert headers["Authorization"] == f"Bearer {TOKEN}", method
        assert path.startswith("/psa/pins")
    get = service.requests[0][1]
    assert f"cid={CID}" in get and "status=queued" in get and "status=pinning" in get


async def test_an_existing_pin_is_reused_not_duplicated(service: PinService) -> None:
    async with RemotePinner([_service("svc", service.url)]) as pinner:
        assert await pinner.pin_all(CID, "first") == {"svc": "queued"}
        service.pins[0]["status"] = "pinned"
        assert await pinner.pin_all(CID, "second") == {"svc": "pinned"}
        assert await pinner.pin_all(OTHER_CID, "other") == {"svc": "queued"}
    assert [body["cid"] for body in service.posts()] == [CID, OTHER_CID]


async def test_a_failed_pin_is_asked_for_again(service: PinService) -> None:
    service.initial_status = "failed"
    async with RemotePinner([_service("svc", service.url)]) as pinner:
        assert await pinner.pin_all(CID, "n") == {"svc": "failed"}
        service.initial_status = "pinning"
        assert await pinner.pin_all(CID, "n") == {"svc": "pinning"}
    assert len(service.posts()) == 2


@pytest.mark.parametrize("status", [401, 500, 503])
async def test_an_http_error_is_a_status_not_an_exception(service: PinService, status: int) -> None:
    if status == 401:
        endpoint = _service("svc", service.url, token="wrong-token")
    else:
        service.force_status = status
        endpoint = _service("svc", service.url)
    async with RemotePinner([endpoint]) as pinner:
        assert await pinner.pin_all(CID, "n") == {"svc": f"error: {status}"}
    assert service.posts() == []


async def test_unreachable_services_do_not_block_the_others(service: PinService) -> None:
    services = [
        _service("down", f"http://127.0.0.1:{_closed_port()}"),
        _service("up", service.url),
        _service("bad-token", service.url, token="nope"),
    ]
    async with RemotePinner(services) as pinner:
        statuses = await pinner.pin_all(CID, "n")
    assert statuses == {"down": "unreachable", "up": "queued", "bad-token": "error: 401"}


async def test_a_slow_service_times_out_as_unreachable(service: PinService) -> None:
    service.slow = True
    async with RemotePinner([_service("slow", service.url)], timeout_s=0.2) as pinner:
        assert await asyncio.wait_for(pinner.pin_all(CID, "n"), 3) == {"slow": "unreachable"}


async def test_a_response_that_is_not_a_pin_status_is_recorded(service: PinService) -> None:
    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>")

    app = web.Application()
    app.router.add_get("/pins", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with RemotePinner([_service("odd", f"http://{host}:{port}")]) as pinner:
            assert await pinner.pin_all(CID, "n") == {"odd": "error: invalid response"}
    finally:
        await runner.cleanup()


async def test_no_services_means_no_calls_and_no_session() -> None:
    async with RemotePinner([]) as pinner:
        assert await pinner.pin_all(CID, "n") == {}


async def test_the_token_is_never_logged(
    service: PinService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    services = [
        _service("ok", service.url),
        _service("refused", service.url, token=TOKEN + "-other"),
        _service("down", f"http://127.0.0.1:{_closed_port()}", token=TOKEN + "-down"),
    ]
    async with RemotePinner(services) as pinner:
        await pinner.pin_all(CID, "n")
    assert caplog.records, "expected the outcome of each pin to be logged"
    assert "ok" in caplog.text and "refused" in caplog.text and "down" in caplog.text
    assert TOKEN not in caplog.text


def test_settings_parse_services_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = [
        {"name": "pinata", "endpoint": "https://api.pinata.cloud/psa/", "token": TOKEN},
        {"name": "local", "endpoint": "http://127.0.0.1:9097", "token": "t2"},
    ]
    monkeypatch.setenv("ACESTEPS_PUBLISHER_PINNING_SERVICES", json.dumps(raw))
    settings = PublisherSettings()
    services = settings.publisher_pinning_services
    assert [(s.name, s.endpoint) for s in services] == [
        ("pinata", "https://api.pinata.cloud/psa"),
        ("local", "http://127.0.0.1:9097"),
    ]
    assert services[0].token.get_secret_value() == TOKEN
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(services)):
        assert TOKEN not in text


def test_settings_default_to_no_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACESTEPS_PUBLISHER_PINNING_SERVICES", raising=False)
    assert PublisherSettings().publisher_pinning_services == []


@pytest.mark.parametrize(
    "raw",
    [
        '[{"name": "x", "endpoint": "ftp://example.com", "token": "t"}]',
        '[{"name": "x", "endpoint": "https://a.example", "token": "t"},'
        ' {"name": "x", "endpoint": "https://b.example", "token": "t"}]',
        '[{"name": "bad name", "endpoint": "https://a.example", "token": "t"}]',
        '[{"name": "x", "endpoint": "https://a.example"}]',
    ],
)
def test_settings_reject_bad_services(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ACESTEPS_PUBLISHER_PINNING_SERVICES", raw)
    with pytest.raises(ValidationError):
        PublisherSettings()


def test_track_published_carries_remote_pins() -> None:
    track = TrackPublished(
        request_id="0x" + "1" * 64,
        audio_hash="0x" + "2" * 64,
        cid=CID,
        urls=(f"ipfs://{CID}",),
        chain_id=31337,
        contract="0x" + "3" * 40,
        tx_hash="0x" + "4" * 64,
        block_number=7,
        remote_pins={"pinata": "queued", "down": "unreachable"},
    )
    assert decode(TrackPublished, encode(track)) == track
    legacy = json.loads(encode(track))
    del legacy["remote_pins"]
    assert decode(TrackPublished, json.dumps(legacy).encode()).remote_pins == {}
