"""The API's handlers. Every answer about a request is its `Generation`.

POST /api/generate                    submit (with variations: the request and its children,
                                      stored together, then queued; an edit with its source,
                                      editsource.py); waits up to
                                      ACESTEPS_API_WAIT_S (or ?wait=S) for the request itself:
                                      200 with the final record, else 202 + Location
GET  /api/generations                 the caller's records, a page at a time (listing.py)
GET  /api/generations/{id}            the record
GET  /api/generations/{id}/audio      the file (ranges, HEAD, conditional requests)
GET  /api/generations/{id}/events     server-sent events: ``status`` per change, ``progress``
POST /api/generations/{id}/cancel     stop it (the key that submitted it): 202 (cancel.py)
POST /api/uploads                     an audio file an edit starts from (uploads.py)
GET  /api/generations/{id}/verify     the check `acesteps verify` runs, as JSON
GET  /api/generations/{id}/manifest   the generation manifest (checked against the chain)
GET  /api/generations/{id}/webhooks   its webhook deliveries (webhooks/routes.py)
GET  /api/webhooks/secret             the caller's webhook signing secret (webhooks/routes.py)
GET  /api/models                      the served models (served.py)
GET  /api/presets                     the offered style presets (presets.py)
GET  /api/openapi.json                the OpenAPI document
GET  /healthz, GET /metrics, GET /    health, Prometheus, the web page
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.helpers import ETag
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from acesteps.hashing import keccak256_hex
from acesteps.messages import GenerationRequest
from acesteps.provenance import ManifestProblem
from acesteps.types import MEDIA_TYPES
from listener.api import listing
from listener.api.audiocache import AudioMismatch, AudioUnavailable
from listener.api.cancel import cancel, deadline_of
from listener.api.deps import CALLER, DEPS, STATIC, ApiDeps, ApiFailure, answer, base_url, lookup
from listener.api.editsource import edit_fields
from listener.api.family import Deployment, http_family
from listener.api.models import GenerateBody, Generation, Status
from listener.api.openapi import openapi_document
from listener.api.presets import check_preset
from listener.api.presets import get_presets as presets
from listener.api.rows import Row, Submission, time_key
from listener.api.served import check_model
from listener.api.served import get_models as models
from listener.api.updates import from_request
from listener.api.verdicts import verdict_body
from listener.api.webhooks.subscribe import subscription

__all__ = ["add_routes", "offchain_id_for"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
RETRY_MS = 2000  # what an EventSource waits before reconnecting
CONTENT_TYPES = MEDIA_TYPES


def offchain_id_for(caller: str, idempotency_key: str | None) -> str:
    """An HTTP request's off-chain id: keccak256 of a random nonce, or of the caller's
    idempotency key. Its request id is the contract's ``offchainRequestId`` of it."""
    if idempotency_key is None:
        return keccak256_hex(os.urandom(16))
    return keccak256_hex(b"acesteps/idempotency/v1\0" + f"{caller}\0{idempotency_key}".encode())


# ---------------------------------------------------------------- POST /api/generate


async def _body(request: web.Request) -> GenerateBody:
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiFailure(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(raw, dict):
        raise ApiFailure(422, "invalid_request", "the body must be a JSON object")
    try:
        return GenerateBody.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise ApiFailure(
            422, "invalid_request", f"{field}: {err['msg']}" if field else err["msg"], field
        ) from None


def _wait_s(request: web.Request, deps: ApiDeps) -> float:
    """How long this POST waits: ``?wait=S`` (at most the server's limit), else the limit."""
    if "respond-async" in request.headers.get("Prefer", ""):
        return 0.0
    raw = request.query.get("wait")
    if raw is None:
        return deps.wait_s
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not wait >= 0:  # also NaN
        raise ApiFailure(422, "invalid_request", "wait: a number of seconds, 0 or more", "wait")
    return min(wait, deps.wait_s)


async def generate(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await _body(request)
    check_model(deps.models, body.model)  # a model no generator serves is never queued
    check_preset(deps.presets, body.preset, deps.models.resolve(body.model).name)
    wait_s = _wait_s(request, deps)
    caller = request[CALLER]
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise ApiFailure(422, "invalid_request", "Idempotency-Key: 1 to 255 characters")
    deadline = deadline_of(request, body, datetime.now(UTC))
    webhook = await subscription(deps, body, caller)
    deployment = Deployment(deps.chain_id, deps.contract)
    offchain_id = offchain_id_for(caller, key)
    request_id = deployment.request_id(offchain_id)
    # The same key with another body is a client bug, not a retry.
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    edit = await edit_fields(deps, body, request_id)  # an edit's source and length (editsource.py)
    try:
        message = GenerationRequest(
            request_id=request_id,
            source="http",
            requester=caller,
            offchain_id=offchain_id,
            deadline=deadline,
            **(body.options() | edit),
        )
    except ValidationError as exc:  # the body's checks mirror these; this is the backstop
        raise ApiFailure(422, "invalid_request", str(exc.errors()[0]["msg"])) from None
    # The request and its variations (acesteps.variations): stored together, then queued.
    family = http_family(message, deployment)
    with deps.hub.watch(request_id) as changes:
        submissions = [
            Submission(
                Generation(id=m.request_id, status=Status.QUEUED, **from_request(m, deployment)),
                m.model_dump_json(),
            )
            for m in family
        ]
        stored = await deps.store.submit_all(submissions, fingerprint, webhook)
        row, inserted = stored[0]
        if not inserted and row.fingerprint not in (None, fingerprint):
            raise ApiFailure(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request body",
                "Idempotency-Key",
            )
        await _queue(deps, family, stored)
        current = await _wait_final(deps, request_id, changes, wait_s) or row.generation
    return answer(request, current, 200 if current.status.final else 202)


async def _queue(
    deps: ApiDeps, family: list[GenerationRequest], stored: list[tuple[Row, bool]]
) -> None:
    """Send what this submission stored, or what an earlier one stored and the projection has
    not read back for ``resend_after_s`` (a retry), the request first. When Kafka refuses the
    first send, the rows this submission made are removed and the answer is 503; once one
    has gone, the others stay in the outbox (`listener.api.outbox`), which sends them later."""
    sent = 0
    for message, (row, inserted) in zip(family, stored, strict=True):
        age = (message.requested_at - row.generation.created_at).total_seconds()
        if not (inserted or (not row.request_seen and age > deps.resend_after_s)):
            continue
        try:
            await deps.submitter.submit(message)
        except Exception as exc:
            if sent:
                log.warning(
                    "queueing request %s failed (%r); the outbox sends it later",
                    message.request_id,
                    exc,
                )
                return
            made = [m.request_id for m, (_, new) in zip(family, stored, strict=True) if new]
            if made:
                await deps.store.forget(*made)
            raise ApiFailure(
                503, "unavailable", f"the request could not be queued: {type(exc).__name__}"
            ) from exc
        sent += 1


async def _wait_final(
    deps: ApiDeps, request_id: str, changes: asyncio.Queue[Generation], wait_s: float
) -> Generation | None:
    current = await deps.store.get(request_id)
    try:
        async with asyncio.timeout(wait_s):
            while current is None or not current.status.final:
                current = await changes.get()
    except TimeoutError:
        pass
    return current


# ---------------------------------------------------------------- reads


async def get_generation(request: web.Request) -> web.Response:
    """The record; while it is queued, with ``queuePosition``: how many queued requests came
    before it (all sources; generators take them partition by partition, so it is a guide)."""
    g = await lookup(request)
    if g.status is Status.QUEUED:
        ahead = await request.app[DEPS].store.queued_before(time_key(g.created_at))
        g = g.model_copy(update={"queue_position": ahead + 1})
    return answer(request, g)


def _track_of(g: Generation) -> tuple[str, str]:
    """The CID and audioHash of ``g``'s published track; else 409 ``not_ready`` while it may
    still get one, 410 ``no_track`` once it has ended without (failed, canceled, revoked): a
    client that retries on ``not_ready`` stops there."""
    if g.status is Status.COMPLETED and g.cid and g.audio_hash:
        return g.cid, g.audio_hash
    if g.status.final:
        raise ApiFailure(410, "no_track", f"request {g.id} is {g.status.value}: it has no track")
    raise ApiFailure(409, "not_ready", f"request {g.id} is {g.status.value}, not completed")


async def get_audio(request: web.Request) -> web.StreamResponse:
    g = await lookup(request)
    cid, audio_hash = _track_of(g)
    fmt = g.format or "mp3"
    try:
        path = await request.app[DEPS].audio.path(cid, audio_hash, fmt)
    except AudioUnavailable as exc:
        raise ApiFailure(503, "ipfs_unavailable", str(exc), headers={"Retry-After": "5"}) from None
    except AudioMismatch as exc:
        raise ApiFailure(502, "audio_mismatch", str(exc)) from None
    return TrackFile(
        path,
        etag=audio_hash,
        headers={
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'inline; filename="{g.id}.{fmt}"',
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )


class TrackFile(web.FileResponse):
    """aiohttp's file response (ranges, HEAD, conditional requests) with the track's
    ``audioHash`` as its strong ETag, instead of one made of the cached copy's mtime and size:
    the same bytes keep the same tag across serves, restarts, replicas and cache evictions."""

    def __init__(self, path: Path, etag: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._track_etag = etag.removeprefix("0x")

    def _etag_match(  # type: ignore[override]
        self, etag_value: str, etags: tuple[ETag, ...], *, weak: bool
    ) -> bool:
        # aiohttp compares its own tag (etag_value); the track's is compared instead.
        return web.FileResponse._etag_match(self._track_etag, etags, weak=weak)

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        web.StreamResponse.etag.fset(self, self._track_etag)  # type: ignore[attr-defined]


def _last_event_id(request: web.Request) -> int:
    try:
        return int(request.headers.get("Last-Event-ID", "0"))
    except ValueError:
        return 0


def _step(g: Generation) -> int:
    """A record's place: 1 queued, 2 generating, 3 publishing, 4 completed, failed, canceled
    or revoked, 5 completed with a final registration."""
    return g.status.rank + 1 + (1 if g.status is Status.COMPLETED and g.final else 0)


def _settled(g: Generation) -> bool:
    """Nothing more will change: failed, canceled, revoked, or completed with a final
    registration."""
    return g.status.final and (g.status is not Status.COMPLETED or g.final)


async def events(request: web.Request) -> web.StreamResponse:
    """One ``status`` event now, then one per change of step, until the record is settled;
    while generating, a ``progress`` event (steps done, in all, percent, ETA) per announcement.

    An event's id is its step (`_step`): a client that reconnects with ``Last-Event-ID``
    gets the current record unless it has that very step already; when that step is the
    settled end, the answer is 204 No Content, which ends an EventSource's reconnecting.
    Steps may go back (a reorg dropped a registration: completed -> publishing); that is an
    event too.
    """
    deps = request.app[DEPS]
    g = await lookup(request)
    base = base_url(request, deps)
    seen = _last_event_id(request)
    if _settled(g) and _step(g) == seen:
        # A reconnect to a finished stream: 204 tells an EventSource to stop reconnecting
        # (a 200 with nothing in it makes it come back forever).
        return web.Response(status=204)
    stream = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    with deps.hub.watch(g.id) as changes:
        g = await deps.store.get(g.id) or g  # anything that changed before watching
        await stream.prepare(request)
        # The reconnection delay rides on the first event: a block of its own would be an
        # empty event to common clients.
        retry = f"retry: {RETRY_MS}\n"
        shown = None
        while True:
            step = _step(g)
            if step != seen:
                data = json.dumps(g.public(base))
                block = f"{retry}id: {step}\nevent: status\ndata: {data}\n\n"
                await stream.write(block.encode())
                seen, retry = step, ""
            if g.status is Status.GENERATING and g.progress is not None and g.progress != shown:
                # No id: a reconnect resumes from the status step and gets the record, which
                # carries the progress too.
                data = g.progress.model_dump_json(by_alias=True)
                await stream.write(f"{retry}event: progress\ndata: {data}\n\n".encode())
                shown, retry = g.progress, ""
            if _settled(g):
                break
            try:
                g = await asyncio.wait_for(changes.get(), HEARTBEAT_S)
            except TimeoutError:
                await stream.write(b": keep-alive\n\n")
    await stream.write_eof()
    return stream


async def manifest(request: web.Request) -> web.Response:
    """The generation manifest, as registered: its bytes are checked against the chain."""
    g = await lookup(request)
    _track_of(g)
    try:
        data = await request.app[DEPS].manifests(g.id)
    except ManifestProblem as exc:
        status, code = _MANIFEST_PROBLEMS[exc.kind]
        headers = {"Retry-After": "5"} if status == 503 else None
        raise ApiFailure(status, code, str(exc), headers=headers) from None
    return web.Response(
        body=data,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


_MANIFEST_PROBLEMS = {
    "absent": (404, "no_manifest"),
    "unreachable": (503, "ipfs_unavailable"),
    "mismatch": (502, "manifest_mismatch"),
    "malformed": (502, "manifest_mismatch"),
}


async def verify(request: web.Request) -> web.Response:
    g = await lookup(request)
    _track_of(g)
    verdict = await request.app[DEPS].verifier(g.id)
    return web.json_response(verdict_body(verdict))


# ---------------------------------------------------------------- service


async def healthz(request: web.Request) -> web.Response:
    projection = request.app[DEPS].projection
    ok = projection is not None and projection.running
    body = {
        "status": "ok" if ok else "unavailable",
        "projection": {
            "running": bool(projection and projection.running),
            "caughtUp": bool(projection and projection.ready.is_set()),
            "lagRecords": projection.lag if projection else None,
        },
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    document = openapi_document(base_url(request, deps), deps.models.names, deps.presets)
    return web.json_response(document)


async def page(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/api/generations", listing.list_generations)
    app.router.add_get("/api/generations/{id}", get_generation)
    app.router.add_get("/api/generations/{id}/audio", get_audio)
    app.router.add_get("/api/generations/{id}/events", events)
    app.router.add_post("/api/generations/{id}/cancel", cancel)
    app.router.add_get("/api/generations/{id}/verify", verify)
    app.router.add_get("/api/generations/{id}/manifest", manifest)
    app.router.add_get("/api/models", models)
    app.router.add_get("/api/presets", presets)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", page)
