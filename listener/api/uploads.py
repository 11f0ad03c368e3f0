"""``POST /api/uploads``: an audio file an edit can start from (``sourceUpload``).

The body is multipart/form-data of one part, ``file``: a WAV, FLAC or MP3 file of 1
or 2 channels lasting `MIN_SOURCE_S` to `MAX_DURATION_S` seconds. It is read as it streams in,
and refused (413 ``upload_too_large``) once it passes ``ACESTEPS_API_UPLOAD_MAX_MB``. Then it is
decoded whole (`describe`: a truncated or damaged file is refused, not only one with a bad
header) and pinned to the API's Kubo with the publisher's import parameters, so that its CID
is `acesteps.ipfs.unixfs.cid_of_bytes` of its bytes (checked: 502 when Kubo says otherwise).
The answer (201) is its CID, its keccak256 (``audioHash``) and what it decodes to; the same
bytes give the same answer. Nothing refused is pinned.

Uploads need a key where submissions do, and spend the same budgets (`listener.api.app`).
The editing of a ``sourceUpload`` reads it back and describes it again
(`listener.api.editsource`).
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any, Final, Literal

import soundfile as sf
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field

from acesteps.editing import MIN_SOURCE_S
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboError, KuboUnavailable
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.options import MAX_DURATION_S, api_name
from acesteps.types import Bytes32Hex, Cid
from listener.api.deps import DEPS, ApiFailure, Ipfs, openapi_error

__all__ = [
    "ACCEPTED",
    "UnusableAudio",
    "UploadedAudio",
    "add_routes",
    "describe",
    "openapi_path",
]

log = logging.getLogger(__name__)

UploadFormat = Literal["wav", "flac", "mp3"]
_FORMATS: Final[dict[str, UploadFormat]] = {
    "WAV": "wav",
    "WAVEX": "wav",
    "FLAC": "flac",
    "MP3": "mp3",
}
"""libsndfile's major formats that are accepted (WAVEX: a WAV with the extensible header)."""
ACCEPTED: Final = "WAV, FLAC or MP3, 1 or 2 channels"
_BLOCK_FRAMES: Final = 1 << 16
_READ_BYTES: Final = 1 << 16


class UnusableAudio(Exception):
    """Bytes an edit cannot start from: the answer's status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class UploadedAudio(BaseModel):
    """``POST /api/uploads``: the file as pinned, and what it decodes to."""

    model_config = ConfigDict(alias_generator=api_name, populate_by_name=True, frozen=True)

    cid: Cid = Field(
        description="where it is pinned (CIDv1, the publisher's parameters): "
        "the sourceUpload of an edit"
    )
    audio_hash: Bytes32Hex = Field(description="keccak256 of its bytes")
    duration_s: float = Field(description="seconds: decoded frames / sampleRate")
    sample_rate: int = Field(description="frames per second")
    channels: int = Field(ge=1, le=2)
    format: UploadFormat
    size_bytes: int = Field(ge=1, description="the file's bytes")


def describe(data: bytes) -> UploadedAudio:
    """``data`` decoded whole, hashed and named by its CID, if an edit can start from it;
    else `UnusableAudio`: 415 ``unsupported_audio`` (not WAV, FLAC or MP3, more than 2
    channels, truncated or damaged), 422 ``upload_too_short`` or ``upload_too_long``.
    CPU work: run it in a thread."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            fmt = _FORMATS.get(audio.format)
            if fmt is None:
                raise _unsupported(f"{audio.format} audio is not accepted")
            rate, channels, declared, frames = audio.samplerate, audio.channels, audio.frames, 0
            if channels > 2:
                raise _unsupported(f"it has {channels} channels")
            while n := len(audio.read(_BLOCK_FRAMES, dtype="float32")):
                frames += n
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise _unsupported(f"it is not audio this service decodes ({reason})") from None
    if fmt != "mp3" and frames != declared:  # an MP3 has no declared length to hold it to
        raise _unsupported(f"it ends after {frames} of its {declared} frames (truncated)")
    riff = int.from_bytes(data[4:8], "little") + 8 if data[:4] == b"RIFF" else 0
    if fmt == "wav" and riff > len(data):
        # libsndfile shortens a truncated WAV to the frames it holds, without a word.
        raise _unsupported(f"it is truncated: {len(data)} of the {riff} bytes it declares")
    duration = frames / rate
    if duration < MIN_SOURCE_S:
        raise UnusableAudio(
            422, "upload_too_short", f"it lasts {duration:g} s; at least {MIN_SOURCE_S:g} s"
        )
    if duration > MAX_DURATION_S:
        raise UnusableAudio(
            422, "upload_too_long", f"it lasts {duration:g} s; at most {MAX_DURATION_S} s"
        )
    return UploadedAudio(
        cid=cid_of_bytes(data),
        audio_hash=keccak256_hex(data),
        duration_s=duration,
        sample_rate=rate,
        channels=channels,
        format=fmt,
        size_bytes=len(data),
    )


def _unsupported(why: str) -> UnusableAudio:
    return UnusableAudio(415, "unsupported_audio", f"{why}: uploads are {ACCEPTED}")


def _ipfs(request: web.Request) -> Ipfs:
    """The API's Kubo client; 503 where it has none."""
    ipfs = request.app[DEPS].ipfs
    if ipfs is None:
        raise ApiFailure(503, "ipfs_unavailable", "this API has no IPFS node for uploads")
    return ipfs


async def post_upload(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    ipfs = _ipfs(request)
    data = await _file(request, deps.upload_max_bytes)
    try:
        uploaded = await asyncio.to_thread(describe, data)
    except UnusableAudio as exc:
        raise ApiFailure(exc.status, exc.code, f"file: {exc}", "file") from None
    try:
        added = await ipfs.add(data, pin=True)
    except KuboUnavailable as exc:
        raise ApiFailure(
            503, "ipfs_unavailable", f"IPFS: {exc}", headers={"Retry-After": "5"}
        ) from None
    except KuboError as exc:
        raise ApiFailure(502, "ipfs_error", f"IPFS refused the file: {exc}") from None
    if added.cid != uploaded.cid:
        log.error("Kubo pinned an upload as %s, its CID is %s", added.cid, uploaded.cid)
        raise ApiFailure(
            502, "cid_mismatch", f"IPFS named the file {added.cid}, not its CID {uploaded.cid}"
        )
    return web.json_response(uploaded.model_dump(mode="json", by_alias=True), status=201)


async def _file(request: web.Request, limit: int) -> bytes:
    """The bytes of the body's one part, ``file``, read up to ``limit`` (413 past it)."""
    if request.content_type != "multipart/form-data":
        raise ApiFailure(
            415,
            "unsupported_media_type",
            "send multipart/form-data with the audio in a part named file",
        )
    too_large = ApiFailure(
        413,
        "upload_too_large",
        f"file: over {limit / 2**20:g} MiB, the largest upload (ACESTEPS_API_UPLOAD_MAX_MB)",
        "file",
    )
    if request.content_length is not None and request.content_length > limit + _READ_BYTES:
        raise too_large  # the part alone is larger; its envelope is far under 64 KiB
    try:
        part = await (await request.multipart()).next()
        if not isinstance(part, BodyPartReader) or part.name != "file":
            raise ApiFailure(
                422, "invalid_request", "file: the body is one part, named file", "file"
            )
        data = bytearray()
        while chunk := await part.read_chunk(_READ_BYTES):
            data += chunk
            if len(data) > limit:
                raise too_large
    except (ValueError, RuntimeError, HttpProcessingError) as exc:
        raise ApiFailure(400, "invalid_request", f"not a multipart/form-data body: {exc}") from None
    return bytes(data)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/uploads", post_upload, name="uploads")


def openapi_path(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The OpenAPI path item of ``/api/uploads`` (its answer's schema: ``UploadedAudio``)."""
    retry = {"Retry-After": "seconds to wait"}
    return {
        "post": {
            "operationId": "uploadAudio",
            "summary": "Upload an audio file to edit (an edit's sourceUpload): pinned to IPFS",
            "security": security,
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "additionalProperties": False,
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": f"{ACCEPTED}, {MIN_SOURCE_S:g} to "
                                    f"{MAX_DURATION_S} s, at most ACESTEPS_API_UPLOAD_MAX_MB "
                                    "(50 MiB by default)",
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "pinned (the same bytes again: the same answer)",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/UploadedAudio"}
                        }
                    },
                },
                "400": openapi_error("not a multipart/form-data body"),
                "401": openapi_error("missing or unknown API key"),
                "413": openapi_error("upload_too_large: the file is over the limit"),
                "415": openapi_error(
                    "unsupported_audio: not WAV, FLAC or MP3 of 1-2 channels, or it does not "
                    "decode (truncated, damaged); or the body is not multipart/form-data"
                ),
                "422": openapi_error("upload_too_short, upload_too_long, or a part not named file"),
                "429": openapi_error("rate limited", **retry),
                "502": openapi_error("IPFS refused the file, or named it by another CID"),
                "503": openapi_error("IPFS unavailable; retry", **retry),
            },
        }
    }
