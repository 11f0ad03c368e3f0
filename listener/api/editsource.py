"""The source of an edit, resolved before ``POST /api/generate`` stores it (`acesteps.editing`).

A request with a ``task`` names its source; the API resolves it to the `EditSource` its
message carries (CID, audioHash, duration), or refuses the request with 422 naming the field:

- ``sourceTrack``: a completed request of this service whose file verifies against the chain
  (`acesteps.verify`: MATCH); the source is its registered CID and audioHash, and its record's
  duration;
- ``sourceUpload``: a CID pinned on this API's Kubo whose bytes are what ``POST /api/uploads``
  accepts (`listener.api.uploads.describe`, run again on the bytes read back);

then the edit itself: no ``duration`` (an edit is as long as its source, plus an extension), a
source of `MIN_SOURCE_S` to `MAX_DURATION_S` seconds, a repaint window that ends within it, an
extension to at most `MAX_DURATION_S`, and a served model whose tasks (when known) include the
pipeline task the edit runs (`acesteps.editing.PIPELINE_TASKS`).
The chain or IPFS out of reach is 503 with ``Retry-After``. A retry of a stored edit reuses
the source its record names.
"""

from __future__ import annotations

import asyncio

from acesteps.editing import (
    MAX_SOURCE_BYTES,
    MIN_SOURCE_S,
    PIPELINE_TASKS,
    EditSource,
    edit_duration,
)
from acesteps.ipfs.kubo import KuboError, KuboRequestError, KuboUnavailable
from acesteps.options import MAX_DURATION_S
from acesteps.verify import Status as Verdict
from listener.api.deps import ApiDeps, ApiFailure
from listener.api.models import GenerateBody, Status
from listener.api.uploads import UnusableAudio, describe

__all__ = ["edit_fields"]


def _refused(field: str, message: str) -> ApiFailure:
    return ApiFailure(422, "invalid_request", f"{field}: {message}", field)


def _unavailable(message: str, code: str = "unavailable") -> ApiFailure:
    return ApiFailure(503, code, message, headers={"Retry-After": "5"})


async def edit_fields(deps: ApiDeps, body: GenerateBody, request_id: str) -> dict[str, object]:
    """What an edit's message takes beyond the body's options: ``duration_s`` (its
    source's, plus an extension) and ``edit_source``; nothing for a request without a task.
    A retry of a stored edit (its ``request_id`` known: the same Idempotency-Key) takes them
    from its record instead of reading the chain and IPFS again (a retry with another body is
    refused after, by its fingerprint)."""
    if body.task is None:
        return {}
    if "duration_s" in body.model_fields_set:
        raise _refused("duration", "an edit is as long as its source (plus an extension)")
    known = await deps.store.get(request_id)
    if known is not None and known.edit_source is not None and known.duration_s is not None:
        source = EditSource.model_validate(known.edit_source.model_dump())
        return {"duration_s": known.duration_s, "edit_source": source}
    served = deps.models.resolve(body.model)
    needed = PIPELINE_TASKS[body.task]
    if served.tasks is not None and needed not in served.tasks:
        raise _refused(
            "task",
            f"model {served.name} cannot {body.task} (its tasks: {', '.join(served.tasks)})",
        )
    if body.source_track is not None:
        field, source = "sourceTrack", await _track(deps, body.source_track)
    elif body.source_upload is not None:
        field, source = "sourceUpload", await _upload(deps, body.source_upload)
    else:  # the options' rules (edit_problems) name one source
        raise _refused("task", "an edit names sourceTrack or sourceUpload")
    return {"duration_s": _duration(body, source, field), "edit_source": source}


async def _track(deps: ApiDeps, request_id: str) -> EditSource:
    """The source ``sourceTrack`` names: its registered CID and audioHash, once its file
    verifies against them."""
    g = await deps.store.get(request_id)
    if g is None:
        raise _refused("sourceTrack", f"no request {request_id} (unknown id)")
    if g.status is not Status.COMPLETED or not (g.cid and g.audio_hash):
        if g.status.final:
            raise _refused("sourceTrack", f"request {g.id} is {g.status.value}: it has no track")
        raise _refused(
            "sourceTrack", f"request {g.id} is {g.status.value}, not finished yet: edit it later"
        )
    if g.duration_s is None:
        raise _refused("sourceTrack", f"request {g.id}: its duration is not known")
    verdict = await deps.verifier(g.id)
    if verdict.status is Verdict.UNKNOWN:
        raise _unavailable(f"sourceTrack: it could not be checked: {verdict.reason}")
    if verdict.status is Verdict.NOT_REGISTERED:
        raise _refused("sourceTrack", f"request {g.id} is not registered ({verdict.reason})")
    if (
        verdict.status is not Verdict.MATCH
        or verdict.onchain_cid is None
        or verdict.onchain_audio_hash is None
    ):
        raise _refused(
            "sourceTrack",
            f"request {g.id}: its bytes do not match its registered audioHash ({verdict.reason})",
        )
    return EditSource(
        kind="track",
        request_id=g.id,
        cid=verdict.onchain_cid,
        audio_hash=verdict.onchain_audio_hash,
        duration_s=g.duration_s,
    )


async def _upload(deps: ApiDeps, cid: str) -> EditSource:
    """The source ``sourceUpload`` names: an upload pinned here, read back and described."""
    not_ours = _refused(
        "sourceUpload", f"{cid} is not an upload of this service (POST /api/uploads)"
    )
    if deps.ipfs is None:
        raise _unavailable(
            "sourceUpload: this API has no IPFS node for uploads", "ipfs_unavailable"
        )
    try:
        pinned = await deps.ipfs.pin_ls(cid)
    except KuboRequestError:
        pinned = False  # a CID Kubo cannot even look up
    except KuboUnavailable as exc:
        raise _unavailable(f"sourceUpload: IPFS: {exc}", "ipfs_unavailable") from None
    if not pinned:
        raise not_ours
    data = bytearray()
    try:
        async for chunk in deps.ipfs.cat_iter(cid):
            data += chunk
            if len(data) > MAX_SOURCE_BYTES:
                raise _refused("sourceUpload", f"{cid} is over {MAX_SOURCE_BYTES} bytes")
    except KuboError as exc:
        raise _unavailable(f"sourceUpload: IPFS: {exc}", "ipfs_unavailable") from None
    try:
        upload = await asyncio.to_thread(describe, bytes(data))
    except UnusableAudio as exc:
        raise _refused("sourceUpload", f"{cid}: {exc}") from None
    if upload.cid != cid:  # pinned by another route, under other import parameters
        raise not_ours
    return EditSource(
        kind="upload", cid=cid, audio_hash=upload.audio_hash, duration_s=upload.duration_s
    )


def _duration(body: GenerateBody, source: EditSource, field: str) -> float:
    """The edit's length, once its window and extension fit its source ``source``."""
    length = source.duration_s
    if not MIN_SOURCE_S <= length <= MAX_DURATION_S:
        raise _refused(
            field,
            f"the source lasts {length:g} s; an edit's source lasts {MIN_SOURCE_S:g} to "
            f"{MAX_DURATION_S} s",
        )
    if body.repaint_end is not None and body.repaint_end > length:
        raise _refused(
            "repaintEnd", f"{body.repaint_end:g} s is past the end of the source ({length:g} s)"
        )
    total = edit_duration(length, body.extend_before, body.extend_after)
    extension = "extendBefore" if body.extend_before is not None else "extendAfter"
    if total > MAX_DURATION_S:
        raise _refused(
            extension,
            f"the source ({length:g} s) and the extension make {total:g} s, over the "
            f"{MAX_DURATION_S} s a track lasts at most",
        )
    return total
