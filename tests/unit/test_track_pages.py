"""The pages a person opens, in-process (`tests.unit.apiapp`): the track pages (``/tracks``,
``/tracks/{id}``: escaping, Open Graph tags, 404s, paging), the verification page and its
settings (``/verify``, ``/api/verify-config``). The browser tests are
tests/integration/test_verify_page.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from acesteps import registry
from acesteps.messages import GenerationFailed
from listener.api.pageconfig import PageConfig
from tests.factories import track_published
from tests.unit.apiapp import BODY, CONTRACT

EVIL = '<script>alert("x")</script> & "quotes" \'too\''


class Meta(HTMLParser):
    """The Open Graph tags and every element's attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.og: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "meta" and (a.get("property") or "").startswith("og:"):
            self.og[str(a["property"])] = str(a.get("content"))
        if tag == "script":
            self.scripts.append(a)
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))


def parsed(html: str) -> Meta:
    meta = Meta()
    meta.feed(html)
    return meta


async def completed(client: Any, deps: Any, kafka: Any, **body: Any) -> str:
    """A submitted request, published: its id."""
    answer = await client.post("/api/generate", json={**BODY, **body})
    rid: str = (await answer.json())["id"]
    request = next(r for r in kafka.sent if r.request_id == rid)
    await deps.store.apply([(rid, request), (rid, track_published(rid))], {})
    return rid


async def test_a_track_page_escapes_the_record_and_has_open_graph_tags(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    rid = await completed(client, deps, kafka, prompt=EVIL, tags=[EVIL, "piano"], lyrics=EVIL)

    answer = await client.get(f"/tracks/{rid}")
    html = await answer.text()

    assert answer.status == 200 and answer.content_type == "text/html"
    assert "<script>alert" not in html  # the user's text never becomes markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    meta = parsed(html)
    base = f"http://{answer.url.host}:{answer.url.port}"
    assert meta.og["og:title"] == EVIL  # escaped in the markup, the same text when parsed
    long = await completed(client, deps, kafka, prompt="slow piano, " * 20 + EVIL)
    html_long = await (await client.get(f"/tracks/{long}")).text()
    assert 'data-testid="prompt"' in html_long and "<script>alert" not in html_long
    assert parsed(html_long).og["og:title"].endswith("…")
    assert meta.og["og:url"] == f"{base}/tracks/{rid}"
    assert meta.og["og:audio"] == f"{base}/api/generations/{rid}/audio"
    assert meta.og["og:audio:type"] == "audio/mpeg"
    assert meta.og["og:type"] == "music.song"
    assert "0x" + "ab" * 32 in meta.og["og:description"]  # the registered audioHash
    assert "seed 7" in meta.og["og:description"] and "piano" in meta.og["og:description"]
    # Only our own scripts: the waveform.
    assert [s["src"] for s in meta.scripts] == ["../static/waveform.js", "../static/track.js"]
    # Player, model and seed, manifest, registration, and the way to check it in a browser.
    assert f'src="../api/generations/{rid}/audio"' in html
    assert 'data-testid="model">tiny-acestep-v1<' in html and 'data-testid="seed">7<' in html
    assert f"../verify?id={rid}" in meta.links
    assert "0x" + "cd" * 32 in html  # the transaction, shown as a hash: no explorer set
    assert not any("/tx/" in link for link in meta.links)


async def test_a_track_page_shows_the_musical_controls_asked(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    asked = await completed(
        client, deps, kafka, bpm=96, key="f# minor", timeSignature=3, vocalLanguage="fr"
    )
    html = await (await client.get(f"/tracks/{asked}")).text()
    assert 'data-testid="controls">96 BPM · F# minor · 3/4 · lyrics in fr<' in html
    plain = await completed(client, deps, kafka)
    assert 'data-testid="controls"' not in await (await client.get(f"/tracks/{plain}")).text()


async def test_a_track_page_links_the_transaction_to_the_explorer(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client()
    deps.pages = PageConfig(explorer_url="https://explorer.example")
    rid = await completed(client, deps, kafka)
    html = await (await client.get(f"/tracks/{rid}")).text()
    assert f"https://explorer.example/tx/0x{'cd' * 32}" in parsed(html).links


async def test_unknown_and_malformed_ids_are_404_pages(make_client) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = await make_client()
    for path in (f"/tracks/0x{'ab' * 32}", "/tracks/0x1234", "/tracks/%3Cscript%3E"):
        answer = await client.get(path)
        html = await answer.text()
        assert answer.status == 404 and answer.content_type == "text/html", path
        assert "No track has this id" in html and "<script>" not in html


async def test_a_request_without_a_track_says_so(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client()
    rid = (await (await client.post("/api/generate", json=BODY)).json())["id"]
    failed = GenerationFailed(request_id=rid, stage="generator", code="policy", message=EVIL)
    await deps.store.apply([(rid, failed)], {})
    answer = await client.get(f"/tracks/{rid}")
    html = await answer.text()
    assert answer.status == 200 and 'data-testid="no-track"' in html
    assert "<script>alert" not in html and "og:audio" not in html and "<audio" not in html


async def test_tracks_lists_registered_tracks_of_everyone_newest_first_in_pages(
    make_client,
) -> None:  # type: ignore[no-untyped-def]
    client, deps, kafka = await make_client(required=True)
    ids = []
    for n, key in enumerate(["s3cret-alice", "s3cret-bob"] * 3):
        headers = {"Authorization": f"Bearer {key}"}
        answer = await client.post("/api/generate", json={**BODY, "seed": n}, headers=headers)
        ids.append((await answer.json())["id"])
    for rid in ids[:5]:  # the sixth stays queued: not listed
        request = next(r for r in kafka.sent if r.request_id == rid)
        await deps.store.apply([(rid, request), (rid, track_published(rid))], {})

    seen: list[str] = []
    path: str | None = "/tracks?limit=2"
    while path is not None:
        answer = await client.get(path)
        assert answer.status == 200
        html = await answer.text()
        seen += re.findall(r'data-testid="track-item" data-id="(0x[0-9a-f]{64})"', html)
        found = re.search(r'data-testid="next-page" rel="next" href="([^"]+)"', html)
        path = "/" + found[1].replace("&amp;", "&") if found else None
    assert seen == list(reversed(ids[:5]))  # both requesters', newest first, no repeats

    empty = await make_client()
    answer = await empty[0].get("/tracks")
    assert answer.status == 200 and "No registered track yet" in await answer.text()
    for bad in ("/tracks?cursor=nope", "/tracks?limit=0", "/tracks?limit=1000"):
        assert (await client.get(bad)).status == 404, bad


async def test_the_verification_page_and_its_settings(make_client) -> None:  # type: ignore[no-untyped-def]
    client, deps, _ = await make_client()
    deps.pages = PageConfig.of(
        "http://127.0.0.1:18545", None, "http://127.0.0.1:18080", "https://x.example/", 12
    )
    page = await client.get("/verify")
    html = await page.text()
    assert page.status == 200 and 'src="static/verify.js"' in html
    script = await client.get("/static/verify.js")
    assert script.status == 200 and len(await script.read()) > 100_000  # the built bundle

    config = await (await client.get("/api/verify-config")).json()
    assert config["rpcUrl"] == "http://127.0.0.1:18545"
    assert config["contract"] == CONTRACT and config["chainId"] == 31337
    assert config["gatewayUrl"] == "http://127.0.0.1:18080"
    assert config["explorerUrl"] == "https://x.example" and config["fromBlock"] == 12
    assert config["abi"] == registry.abi() and config["maxBytes"] == 100_000_000


def test_a_keyed_rpc_url_is_never_handed_out_unasked() -> None:
    keyed = "https://mainnet.example-rpc.io/v3/SECRETKEY"
    assert PageConfig.of(keyed, None, None, None, None).rpc_url is None
    public = "https://rpc.example.org"
    assert PageConfig.of(keyed, public, None, None, None).rpc_url == public
    assert PageConfig.of("http://localhost:8545", None, None, None, None).rpc_url is not None
