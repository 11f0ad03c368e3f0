"""The pages a person opens: the verification page and the track pages.

GET /verify               the verification page (static/verify.html, its script static/verify.js
                          built from web/verify/): the browser hashes the file and asks the chain
GET /api/verify-config    what that page suggests: RPC URL, contract, chain id, IPFS gateway, the
                          block its log searches start from, the registry's ABI; suggestions only
GET /tracks               recent registered tracks of all requesters, newest first, paged
GET /tracks/{id}          one track: player, waveform, prompt, tags, model, seed, preset (and its
                          adapter's digest), its variations or its parent, what it edits (the
                          source track or upload), links to edit it on the main page, manifest,
                          its registration, Open Graph tags for link previews

The verdict of /verify never comes from this server: it serves files and suggestions, and the
page computes the hashes and reads the registration from the JSON-RPC endpoint the user
keeps or changes. Track pages are rendered here from the status store; everything taken from
a record (prompts and lyrics are user text) is HTML-escaped.
"""

from __future__ import annotations

from datetime import UTC
from html import escape
from typing import Any

from aiohttp import web

from acesteps import registry
from acesteps.editing import EDIT_TASKS
from acesteps.types import MEDIA_TYPES, parse_request_id
from listener.api.deps import DEPS, STATIC, ApiDeps, base_url
from listener.api.listing import CURSOR
from listener.api.models import Generation, Status
from listener.api.rows import ListQuery, time_key

__all__ = ["add_routes", "openapi_path", "track_html", "tracks_html"]

MAX_VERIFY_BYTES = 100 * 1000 * 1000
"""The largest file the verification page hashes (a 240 s WAV is ~42 MB)."""
TRACKS_PER_PAGE = 20
MAX_TRACKS_PER_PAGE = 100
CONTENT_TYPES = MEDIA_TYPES


def add_routes(app: web.Application) -> None:
    app.router.add_get("/verify", verify_page)
    app.router.add_get("/api/verify-config", verify_config)
    app.router.add_get("/tracks", tracks_page)
    app.router.add_get("/tracks/{id}", track_page)


# ---------------------------------------------------------------- /verify


async def verify_page(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "verify.html", headers={"Cache-Control": "no-cache"})


async def verify_config(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    pages = deps.pages
    body = {
        "rpcUrl": pages.rpc_url,
        "contract": deps.contract,
        "chainId": deps.chain_id,
        "gatewayUrl": pages.gateway_url,
        "explorerUrl": pages.explorer_url,
        "fromBlock": pages.from_block,
        "maxBytes": MAX_VERIFY_BYTES,
        "abi": registry.abi(),
    }
    return web.json_response(body, headers={"Cache-Control": "no-cache"})


def openapi_path() -> dict[str, Any]:
    """The OpenAPI path item of ``/api/verify-config``."""
    url = {"type": ["string", "null"], "format": "uri"}
    schema = {
        "type": "object",
        "required": [
            "rpcUrl",
            "contract",
            "chainId",
            "gatewayUrl",
            "explorerUrl",
            "fromBlock",
            "maxBytes",
            "abi",
        ],
        "properties": {
            "rpcUrl": {**url, "description": "the JSON-RPC endpoint suggested (null: none)"},
            "contract": {"type": "string", "description": "the registry's address"},
            "chainId": {"type": "integer"},
            "gatewayUrl": {**url, "description": "the IPFS gateway suggested"},
            "explorerUrl": {**url, "description": "a block explorer's base (BASE/tx/HASH)"},
            "fromBlock": {"type": "integer", "minimum": 0, "description": "where log scans start"},
            "maxBytes": {"type": "integer", "description": "the largest file the page hashes"},
            "abi": {"type": "array", "items": {"type": "object"}, "description": "the registry's"},
        },
    }
    error = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        "get": {
            "operationId": "getVerifyConfig",
            "summary": "What the verification page (/verify) suggests: RPC URL, contract, gateway",
            "description": "Suggestions only: the page computes the hashes itself and asks the "
            "chain at the RPC URL its user keeps or changes; no verdict comes from this server.",
            "responses": {
                "200": {
                    "description": "the page's default settings",
                    "content": {"application/json": {"schema": schema}},
                },
                "429": {
                    "description": "rate limited",
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
    }


# ---------------------------------------------------------------- /tracks


def _limited(request: web.Request, deps: ApiDeps) -> web.Response | None:
    """429 when the caller's read budget is spent (the pages read the store, as the API)."""
    wait = deps.read_limit.take(f"addr:{request.remote}")
    if wait <= 0:
        return None
    retry = str(max(1, int(wait + 0.999)))
    body = _document("Too many requests", f"<p>Too many requests; retry in {retry} s.</p>", "")
    return _html(body, 429, {"Retry-After": retry})


async def tracks_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if (limited := _limited(request, deps)) is not None:
        return limited
    cursor, limit = request.query.get("cursor"), request.query.get("limit")
    after = None
    if cursor:
        found = CURSOR.fullmatch(cursor)
        if found is None:
            return _html(_not_found("This page of tracks does not exist."), 404)
        after = (found[1], found[2])
    size = TRACKS_PER_PAGE
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_TRACKS_PER_PAGE:
            return _html(_not_found("This page of tracks does not exist."), 404)
        size = int(limit)
    query = ListQuery(requester=None, statuses=(Status.COMPLETED.value,), after=after, limit=size)
    page, more = await deps.store.page(query)
    last = page[-1] if page else None
    next_cursor = f"{time_key(last.created_at)}_{last.id}" if more and last else None
    return _html(tracks_html(page, next_cursor, first=after is None, limit=limit))


async def track_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if (limited := _limited(request, deps)) is not None:
        return limited
    rid = parse_request_id(request.match_info["id"])
    g = await deps.store.get(rid) if rid is not None else None
    if g is None:
        return _html(_not_found("No track has this id on this server.", root="../"), 404)
    base = base_url(request, deps)
    return _html(track_html(g, base, deps.pages.explorer_url))


# ---------------------------------------------------------------- HTML


def _e(value: object) -> str:
    """``value`` as HTML text or attribute value (quotes escaped too)."""
    return escape("" if value is None else str(value), quote=True)


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache", **(headers or {})},
    )


def _document(title: str, main: str, head: str, root: str = "") -> str:
    """A whole page; ``root`` leads from the page's URL to the site's root (``../`` under
    /tracks/), so the links stay relative and work behind a proxy that adds a prefix."""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{_e(title)}</title>
{head}  <link rel="stylesheet" href="{root}static/style.css">
  <link rel="stylesheet" href="{root}static/pages.css">
</head>
<body>
<header>
  <p class="small"><a href="{root or "./"}">AceSteps</a> · <a href="{root}tracks">Tracks</a> ·
    <a href="{root}verify">Verify a file</a></p>
</header>
<main>
{main}
</main>
</body>
</html>
"""


def _not_found(message: str, root: str = "") -> str:
    main = f'<section><h1>Not found</h1><p data-testid="not-found">{_e(message)}</p></section>'
    return _document("Not found · AceSteps", main, "", root)


def _shorten(text: str | None, size: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= size else text[: size - 1].rstrip() + "…"


def _title(g: Generation) -> str:
    return _shorten(g.prompt, 90) or f"Track {g.id[:10]}…"


def _summary(g: Generation) -> str:
    """One line about a track: tags, length, model and seed."""
    parts = []
    if g.tags:
        parts.append(", ".join(g.tags))
    if g.duration_s is not None:
        parts.append(f"{g.duration_s:g} s {(g.format or '').upper()}".strip())
    if g.model_id or g.model:
        parts.append(g.model_id or g.model or "")
    if g.seed is not None:
        parts.append(f"seed {g.seed}")
    return " · ".join(parts)


def _controls(g: Generation) -> str:
    """The musical controls the request set ("96 BPM · F# minor · 3/4 · fr"), or ""."""
    parts = []
    if g.bpm is not None:
        parts.append(f"{g.bpm} BPM")
    if g.key is not None:
        parts.append(g.key)
    if g.time_signature is not None:
        parts.append(f"{g.time_signature}/4")
    if g.vocal_language is not None:
        parts.append(f"lyrics in {g.vocal_language}")
    if g.instrumental:
        parts.append("instrumental")
    return " · ".join(parts)


def tracks_html(page: list[Generation], next_cursor: str | None, first: bool, limit: Any) -> str:
    """``/tracks``: one item per registered track, and the links to the next page."""
    items = []
    for g in page:
        created = g.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        items.append(
            f'<li data-testid="track-item" data-id="{_e(g.id)}">'
            f'<a class="title" href="tracks/{_e(g.id)}">{_e(_title(g))}</a><br>'
            f'<span class="small">{_e(_summary(g))}</span><br>'
            f'<span class="small">{_e(created)} · audioHash '
            f'<span class="mono">{_e(g.audio_hash)}</span></span></li>'
        )
    listed = (
        f'<ul class="track-list" data-testid="track-list">{"".join(items)}</ul>'
        if items
        else '<p data-testid="no-tracks">No registered track yet.</p>'
    )
    size = f"&amp;limit={_e(limit)}" if limit else ""
    pager = []
    if not first:
        pager.append(f'<a href="tracks{"?limit=" + _e(limit) if limit else ""}">Newest</a>')
    if next_cursor:
        pager.append(
            f'<a data-testid="next-page" rel="next" href="tracks?cursor={_e(next_cursor)}{size}">'
            "Older tracks</a>"
        )
    main = (
        '<section aria-labelledby="tracks-title"><h1 id="tracks-title">Registered tracks</h1>'
        '<p class="small">Newest first: every track this service generated and registered on '
        "chain. Each can be checked in your browser against the chain alone.</p>"
        f'{listed}<nav class="pager" aria-label="Pages">{"".join(pager)}</nav></section>'
    )
    return _document("Registered tracks · AceSteps", main, "")


def _og(prop: str, value: str) -> str:
    return f'  <meta property="{prop}" content="{_e(value)}">\n'


def track_html(g: Generation, base: str, explorer_url: str | None) -> str:
    """``/tracks/{id}``: the track, what made it, its registration, and Open Graph tags."""
    page_url = f"{base}/tracks/{g.id}"
    audio_url = f"{base}/api/generations/{g.id}/audio"
    published = g.status is Status.COMPLETED and bool(g.cid)
    description = _summary(g)
    if published:
        description = f"{description} · registered on chain, audioHash {g.audio_hash}".lstrip(" ·")
    else:
        description = f"{description} · {g.status.value}".lstrip(" ·")
    head = (
        _og("og:type", "music.song")
        + _og("og:site_name", "AceSteps")
        + _og("og:title", _title(g))
        + _og("og:description", description)
        + _og("og:url", page_url)
        + f'  <meta name="description" content="{_e(description)}">\n'
        + f'  <link rel="canonical" href="{_e(page_url)}">\n'
    )
    if published:
        content_type = CONTENT_TYPES.get(g.format or "mp3", "audio/mpeg")
        head += _og("og:audio", audio_url) + _og("og:audio:type", content_type)
        head += '  <script src="../static/waveform.js" defer></script>\n'
        head += '  <script src="../static/track.js" defer></script>\n'

    facts = [
        ("Status", f'<span data-testid="status">{_e(g.status.value)}</span>'),
        ("Request id", f'<span class="mono" data-testid="request-id">{_e(g.id)}</span>'),
    ]
    if g.duration_s is not None:
        facts.append(("Length", f"{_e(f'{g.duration_s:g}')} s, {_e((g.format or '').upper())}"))
    facts.append(("Model", f'<span data-testid="model">{_e(g.model_id or g.model or "—")}</span>'))
    facts.append(
        ("Seed", f'<span data-testid="seed">{_e(g.seed if g.seed is not None else "—")}</span>')
    )
    if g.preset or g.adapter_digest:
        preset = f'<span data-testid="preset">{_e(g.preset or "—")}</span>'
        if g.adapter_digest:
            preset += (
                ', LoRA adapter <span class="mono" data-testid="adapter-digest">'
                f"{_e(g.adapter_digest)}</span>"
            )
        facts.append(("Preset", preset))
    if controls := _controls(g):
        facts.append(("Controls", f'<span data-testid="controls">{_e(controls)}</span>'))
    if family := _family(g):
        facts.append(family)
    if edited := _edited(g):
        facts.append(edited)
    created = g.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    facts.append(("Created", _e(created)))

    parts = [
        '<section aria-labelledby="track-title">'
        f'<h1 id="track-title" data-testid="title">{_e(_title(g))}</h1>'
    ]
    if g.prompt and _title(g) != g.prompt:  # shortened, or on several lines: in full
        parts.append(f'<p class="prompt" data-testid="prompt">{_e(g.prompt)}</p>')
    if g.tags:
        tags = "".join(f"<li>{_e(tag)}</li>" for tag in g.tags)
        parts.append(f'<ul class="tags" data-testid="tags" aria-label="Tags">{tags}</ul>')
    if published:
        parts.append(
            f'<audio id="player" data-testid="player" controls preload="metadata" '
            f'src="../api/generations/{_e(g.id)}/audio"></audio>'
            '<canvas id="waveform" data-testid="waveform" width="800" height="120" role="img" '
            f'aria-label="Waveform of the track" data-src="../api/generations/{_e(g.id)}/audio">'
            "</canvas>"
        )
    else:
        message = (
            g.error.message if g.error is not None else "This request has no registered track yet."
        )
        parts.append(f'<p class="form-error" data-testid="no-track">{_e(message)}</p>')
    parts.append(_facts(facts))
    if published:
        parts.append(_edit_links(g))
    if g.lyrics:
        parts.append(
            "<details><summary>Lyrics</summary>"
            f'<pre class="lyrics" data-testid="lyrics">{_e(g.lyrics)}</pre></details>'
        )
    parts.append("</section>")
    if published:
        parts.append(_registration(g, explorer_url))
    return _document(f"{_title(g)} · AceSteps", "\n".join(parts), head, root="../")


def _family(g: Generation) -> tuple[str, str] | None:
    """The links between variations (`acesteps.variations`): a parent's to each of its
    variations, a variation's to its parent."""
    if g.children:
        links = ", ".join(
            f'<a data-testid="variation-link" href="../tracks/{_e(child)}">variation {k}</a>'
            for k, child in enumerate(g.children, start=1)
        )
        return "Variations", f'<span data-testid="variations">{links}</span>'
    if g.parent:
        link = (
            f'<a class="mono" data-testid="parent-link" href="../tracks/{_e(g.parent)}">'
            f"{_e(g.parent)}</a>"
        )
        return "Variation", f"{_e(g.variation)} of {link}"
    return None


def _edited(g: Generation) -> tuple[str, str] | None:
    """What an edit (`acesteps.editing`) edits: a link to the source track's page, or the
    uploaded file's CID."""
    if g.task is None:
        return None
    if g.source_track:
        rid = _e(g.source_track)
        link = f'<a class="mono" data-testid="source-link" href="../tracks/{rid}">{rid}</a>'
        source = f"track {link}"
    elif g.source_upload:
        cid = f'<span class="mono" data-testid="source-upload">{_e(g.source_upload)}</span>'
        source = f"uploaded file {cid}"
    else:
        return None
    return "Edit", f'<span data-testid="edit">{_e(g.task.capitalize())} of {source}</span>'


def _edit_links(g: Generation) -> str:
    """Extend, Repaint, Cover: the main page, its form filled in to edit this track."""
    links = " ".join(
        f'<a class="button" data-testid="edit-{task}" '
        f'href="../?task={task}&amp;sourceTrack={_e(g.id)}">{task.capitalize()}</a>'
        for task in EDIT_TASKS
    )
    return f'<p class="edit-actions" data-testid="edit-actions">Edit this track: {links}</p>'


def _facts(rows: list[tuple[str, str]]) -> str:
    """A definition list of (label, HTML already escaped)."""
    inner = "".join(f"<dt>{_e(label)}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<dl class="facts">{inner}</dl>'


def _registration(g: Generation, explorer_url: str | None) -> str:
    tx = _e(g.tx_hash)
    tx_html = (
        f'<a class="mono" data-testid="tx" href="{_e(explorer_url)}/tx/{tx}" target="_blank" '
        f'rel="noopener">{tx}</a>'
        if explorer_url and g.tx_hash
        else f'<span class="mono" data-testid="tx">{tx or "—"}</span>'
    )
    gateway = next((u for u in g.ipfs_urls if u.startswith(("http://", "https://"))), None)
    cid = (
        f'<a class="mono" data-testid="cid" href="{_e(gateway)}" target="_blank" '
        f'rel="noopener">{_e(g.cid)}</a>'
        if gateway
        else f'<span class="mono" data-testid="cid">{_e(g.cid)}</span>'
    )
    settled = "final" if g.final else f"{g.confirmations or 1} confirmation(s), not final yet"
    rows = [
        ("audioHash", f'<span class="mono" data-testid="audio-hash">{_e(g.audio_hash)}</span>'),
        ("CID", cid),
        ("Transaction", tx_html),
        (
            "Block",
            f"{_e(g.block_number if g.block_number is not None else '—')}"
            f" ({_e(settled)}), chain {_e(g.chain_id if g.chain_id is not None else '—')}",
        ),
        ("Contract", f'<span class="mono">{_e(g.contract or "—")}</span>'),
    ]
    if g.manifest_hash:
        rows.append(
            (
                "Manifest",
                f'<a class="mono" data-testid="manifest-link" '
                f'href="../api/generations/{_e(g.id)}/manifest">{_e(g.manifest_hash)}</a>',
            )
        )
    return (
        '<section aria-labelledby="registration-title">'
        '<h2 id="registration-title">On-chain registration</h2>'
        f"{_facts(rows)}"
        '<p><a class="button" data-testid="verify-link" '
        f'href="../verify?id={_e(g.id)}">Verify in your browser</a></p>'
        '<p class="small">The verification page hashes the file in your browser and reads the '
        "registration from an Ethereum node you choose: it does not take this server's word. "
        f"From a terminal: <code>acesteps verify {_e(g.id)}</code>.</p></section>"
    )
