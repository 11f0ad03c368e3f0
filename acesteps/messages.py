"""The records on the AceSteps topics (the table is in `acesteps.topics`).

Every value is one of the pydantic models below, JSON-encoded (in schema registry mode, framed
in the Confluent wire format: `acesteps.kafka.schema_registry`), keyed by the request id, with
a ``acesteps-type`` header naming the model. The one exception is an audio chunk, whose value
is raw file bytes described by headers (see `AudioChunk`). Models are frozen, reject unknown
fields and carry ``schema_version``; their JSON Schemas are exported to ``schemas/`` by
``acesteps schemas export`` so that other teams can consume the topics.

A model that validates is a record the service accepts: the structural limits of a request
(duration, lengths, formats) are those of `acesteps.options`, so nothing out of range ever
reaches a topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from acesteps.editing import EditSource
from acesteps.manifest import Manifest
from acesteps.options import MAX_SEED, GenerationOptions
from acesteps.origin import ChainOrigin, RequestOrigin
from acesteps.types import Address, AudioFormat, Bytes32Hex, Cid, RequestId, Source

__all__ = [
    "MAX_CHUNK_BYTES",
    "MESSAGE_TYPES",
    "TYPE_HEADER",
    "AudioChunk",
    "AudioReady",
    "CancelRequested",
    "ChainOrigin",
    "GenerationCanceled",
    "GenerationFailed",
    "GenerationProgress",
    "GenerationRequest",
    "GenerationRevoked",
    "ListenerCheckpoint",
    "Message",
    "RecentBlock",
    "Registered",
    "RegistrationReorged",
    "RequestOrigin",
    "TrackFinalized",
    "TrackPublished",
    "decode",
    "encode",
    "headers_for",
    "json_of",
]

MAX_CHUNK_BYTES: Final = 512 * 1024
TYPE_HEADER: Final = "acesteps-type"


class Message(BaseModel):
    """Base of every topic value: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = 1
    SCHEMA_VERSION: ClassVar[int] = 1

    @model_validator(mode="after")
    def _known_version(self) -> Message:
        if self.schema_version != self.SCHEMA_VERSION:
            raise ValueError(
                f"{type(self).__name__} schema_version {self.schema_version} is not "
                f"{self.SCHEMA_VERSION}, the version this code reads"
            )
        return self


# ------------------------------------------------------------------ requests


class GenerationRequest(Message, GenerationOptions):
    """``PREFIX.requests.v1``: one request for a track, from the chain or from HTTP."""

    # The options (prompt, duration_s, lyrics, ...) are those of `GenerationOptions`.

    request_id: RequestId
    source: Source
    requester: str = Field(
        max_length=128, description="the requesting address (chain) or API key id (http)"
    )
    chain: ChainOrigin | None = None
    offchain_id: Bytes32Hex | None = Field(
        None,
        description="http: the id the contract derives request_id from when the track is "
        "registered (registerOffchainTrack); absent in records of older versions",
    )
    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    deadline: datetime | None = Field(
        None,
        description="http: when the request is canceled if it is not published by then "
        "(`deadline` or `Cancel-After` on submit); the workers check it before and during "
        "their work",
    )

    parent_id: RequestId | None = Field(
        None,
        description="a variation: the request it is a variation of (acesteps.variations)",
        exclude_if=lambda value: value is None,
    )
    variation: int | None = Field(
        None,
        ge=1,
        le=3,
        description="a variation: its index among its parent's (the parent is 0)",
        exclude_if=lambda value: value is None,
    )

    edit_source: EditSource | None = Field(
        None,
        description="an edit (task): its source as the API resolved it (acesteps.editing)",
        exclude_if=lambda value: value is None,
    )

    @model_validator(mode="after")
    def _consistent(self) -> GenerationRequest:
        if (self.task is None) != (self.edit_source is None):
            raise ValueError("an edit (task), and only an edit, carries its edit_source")
        if (source := self.edit_source) is not None:
            named = self.source_track if source.kind == "track" else self.source_upload
            if named != (source.request_id if source.kind == "track" else source.cid):
                raise ValueError("edit_source is not the source the options name")
        if (self.parent_id is None) != (self.variation is None):
            raise ValueError("a variation names both its parent_id and its index (variation)")
        if self.parent_id is not None and self.variations is not None:
            raise ValueError("a variation has no variations of its own")
        if (self.source == "chain") != (self.chain is not None):
            raise ValueError("chain origin is required for, and only for, source 'chain'")
        if self.source == "chain" and self.offchain_id is not None:
            raise ValueError("offchain_id is for source 'http' only")
        return self

    def origin(self) -> RequestOrigin:
        return RequestOrigin(source=self.source, chain=self.chain, offchain_id=self.offchain_id)


# ------------------------------------------------------------------ audio


class AudioChunk(BaseModel):
    """``PREFIX.audio.v1`` chunk record: raw bytes of the file, described by headers.

    Headers: ``acesteps-type: AudioChunk``, ``request-id``, ``sequence`` (0-based) and
    ``total`` (number of chunks). Not JSON: the value is the bytes themselves.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    request_id: RequestId
    sequence: int = Field(ge=0)
    total: int = Field(ge=1)
    data: bytes = Field(max_length=MAX_CHUNK_BYTES)

    @model_validator(mode="after")
    def _in_range(self) -> AudioChunk:
        if self.sequence >= self.total:
            raise ValueError(f"sequence {self.sequence} is not below total {self.total}")
        return self

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (TYPE_HEADER, b"AudioChunk"),
            ("request-id", self.request_id.encode()),
            ("sequence", str(self.sequence).encode()),
            ("total", str(self.total).encode()),
        ]

    @classmethod
    def from_record(cls, headers: Any, value: bytes) -> AudioChunk:
        h = {k: v for k, v in headers or ()}
        if h.get(TYPE_HEADER) != b"AudioChunk":
            raise ValueError("not an AudioChunk record")
        try:
            return cls(
                request_id=h["request-id"].decode(),
                sequence=int(h["sequence"]),
                total=int(h["total"]),
                data=value,
            )
        except (KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed AudioChunk headers: {exc!r}") from exc

    @staticmethod
    def split(request_id: str, data: bytes, size: int = MAX_CHUNK_BYTES) -> list[AudioChunk]:
        """Cut a file into chunks of at most ``size`` bytes (an empty file is one chunk)."""
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        return [
            AudioChunk(request_id=request_id, sequence=i, total=len(pieces), data=p)
            for i, p in enumerate(pieces)
        ]


class AudioReady(Message, RequestOrigin):
    """``PREFIX.audio.v1``, after a request's chunks: what the file is and how it was made."""

    request_id: RequestId
    audio_hash: Bytes32Hex = Field(description="keccak256 of the file's bytes")
    cid: Cid = Field(description="CIDv1, raw leaves, sha2-256, 256 KiB chunks, balanced")
    size_bytes: int = Field(ge=0)
    chunks: int = Field(ge=1)
    format: AudioFormat
    sample_rate: int = Field(gt=0)
    channels: int = Field(ge=1, le=8)
    duration_s: float = Field(gt=0)
    seed: int = Field(ge=0, le=MAX_SEED)
    model_id: str = Field(min_length=1, max_length=200)
    model: str | None = Field(
        None,
        max_length=64,
        description="the served model that made it (acesteps.models); absent from older records",
        exclude_if=lambda value: value is None,
    )
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds spent per stage (model, encode, hash, ...)"
    )
    manifest: Manifest | None = Field(
        None, description="how the file was made (acesteps.manifest); absent from older records"
    )
    deadline: datetime | None = Field(
        None, description="the request's deadline: not published after it"
    )


# ------------------------------------------------------------------ results


class Registered(BaseModel):
    """A ``registerTrack`` (or ``registerOffchainTrack``) transaction and where it was mined."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    request_id: RequestId
    audio_hash: Bytes32Hex
    cid: Cid
    chain_id: int = Field(ge=1)
    contract: Address
    tx_hash: Bytes32Hex
    block_number: int = Field(ge=0)
    block_hash: Bytes32Hex | None = Field(None, description="absent in older records")


class TrackPublished(Message, Registered, RequestOrigin):
    """``PREFIX.tracks.v1``: a track pinned to IPFS and registered on the contract, with
    ``confirmations`` blocks on top of its registration (not final yet: see `TrackFinalized`;
    a reorg may still drop it, see `RegistrationReorged`)."""

    urls: tuple[str, ...] = Field(description="where the file can be fetched (ipfs://, gateway)")
    manifest_hash: Bytes32Hex | None = Field(
        None, description="keccak256 of the generation manifest's canonical bytes (provenanceOf)"
    )
    manifest_cid: Cid | None = Field(None, description="where the manifest is pinned")
    confirmations: int | None = Field(
        None, ge=1, description="blocks from the registration's to the head (1: the head)"
    )
    format: AudioFormat | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="reproduces the track")
    model_id: str | None = Field(default=None, max_length=200)
    model: str | None = Field(
        None,
        max_length=64,
        description="the served model that made it (acesteps.models)",
        exclude_if=lambda value: value is None,
    )
    weights_digest: str | None = Field(
        None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="the digest of that model's weights, as its manifest records it",
        exclude_if=lambda value: value is None,
    )
    adapter_digest: str | None = Field(
        None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="the digest of the LoRA adapter of its style preset, as its manifest "
        "records it (acesteps.presets); absent when it ran without one",
        exclude_if=lambda value: value is None,
    )
    remote_pins: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "remote pinning services asked to pin the CID too (best effort): service name -> "
            "its status when published: queued, pinning, pinned, failed, unreachable or "
            "'error: <HTTP status>'; empty when none is configured"
        ),
    )


class TrackFinalized(Message, Registered):
    """``PREFIX.tracks.v1``: the registration of a `TrackPublished` is final (its block is at
    or below the node's finalized block, or deep enough: ``finality`` says which)."""

    confirmations: int = Field(ge=1)
    finality: str = Field(max_length=100, description="the rule: 'finalized tag' or 'N blocks'")
    finalized_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class RegistrationReorged(Message, Registered):
    """``PREFIX.tracks.v1``: a published registration (this transaction) vanished in a reorg.

    The track is registered again when its request is still pending (a `TrackPublished` with
    the new transaction follows); otherwise the request itself vanished or failed (``reason``).
    """

    reason: str = Field(max_length=500)
    reorged_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class GenerationFailed(Message):
    """``PREFIX.failures.v1``, the dead-letter topic: a request that will not complete."""

    request_id: RequestId
    stage: Literal["listener", "api", "generator", "publisher"]
    code: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    message: str = Field(max_length=4_000)
    retryable: Literal[False] = False
    source: Source | None = None
    chain: ChainOrigin | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class GenerationCanceled(Message):
    """``PREFIX.failures.v1``: a request stopped before it was published, and why.

    Written by the worker that stopped it: the generator (before its model work, or between
    two denoising steps) or the publisher (before pinning or registering). Nothing of it is
    registered; a chain request canceled on chain was refunded by the contract itself.
    """

    request_id: RequestId
    stage: Literal["generator", "publisher"]
    reason: Literal["requested", "deadline", "chain"] = Field(
        description="requested: by its API key; deadline: its deadline passed; chain: "
        "cancelRequest or reclaim on the contract"
    )
    message: str = Field(max_length=1_000)
    source: Source | None = None
    chain: ChainOrigin | None = None
    canceled_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class CancelRequested(Message):
    """``PREFIX.cancels.v1`` (compacted, by request id): stop this request if it is not
    published yet.

    Written by the API (``POST /api/generations/{id}/cancel``, by the key that submitted it)
    and by the listener (a confirmed ``RequestCanceled`` log: the requester canceled or
    reclaimed on chain). Every generator and publisher reads the whole topic.
    """

    request_id: RequestId
    reason: Literal["requested", "chain"]
    by: str = Field(max_length=128, description="the API key id, or the requester's address")
    tx_hash: Bytes32Hex | None = Field(None, description="chain: the cancelling transaction")
    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class GenerationProgress(Message):
    """``PREFIX.progress.v1`` (advisory): a worker started on a request, and while the model
    runs, how many of its denoising steps are done.

    Sent outside the worker's transaction, so it is seen while the work runs; it may repeat
    when a request is retried and may be lost. Consumers treat it as a hint that only moves a
    status forward (queued -> generating -> publishing).
    """

    request_id: RequestId
    stage: Literal["generating", "publishing"]
    worker: str = Field(max_length=200, description="the instance doing the work")
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    step: int | None = Field(
        None, ge=0, description="denoising steps done (generating); absent when it starts"
    )
    steps: int | None = Field(None, ge=1, description="denoising steps in all")
    eta_s: float | None = Field(
        None, ge=0, description="the worker's estimate of the seconds left to the last step"
    )


class GenerationRevoked(Message):
    """``PREFIX.requests.v1``: an on-chain request whose log vanished in a reorg.

    Emitted by the listener when a reorg deeper than its confirmation depth removes a request
    it had already put on the topic. Consumers drop the request if they still can; the status
    becomes ``revoked``.
    """

    request_id: RequestId
    reason: str = Field(max_length=500)
    chain_id: int = Field(ge=1)
    contract: Address
    block_number: int = Field(ge=0, description="the orphaned block that held the request")
    block_hash: Bytes32Hex
    revoked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class RecentBlock(BaseModel):
    """A block the listener processed: its hash, and the requests it emitted from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    number: int = Field(ge=0)
    hash: Bytes32Hex
    request_ids: tuple[Bytes32Hex, ...] = ()


class ListenerCheckpoint(Message):
    """``PREFIX.listener.checkpoints`` (compacted): the last block the listener finished.

    ``recent`` keeps the hashes of recently processed blocks (newest last) and the requests
    emitted from them, so that after a restart a reorg below the checkpoint is still detected,
    the common ancestor found, and vanished requests revoked.
    """

    chain_id: int = Field(ge=1)
    contract: Address
    block_number: int = Field(ge=0)
    block_hash: Bytes32Hex
    recent: tuple[RecentBlock, ...] = ()


MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    m.__name__: m
    for m in (
        GenerationRequest,
        GenerationRevoked,
        AudioReady,
        TrackPublished,
        TrackFinalized,
        RegistrationReorged,
        GenerationFailed,
        GenerationCanceled,
        CancelRequested,
        GenerationProgress,
        ListenerCheckpoint,
    )
}

# ------------------------------------------------------------------ wire format

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    """The record value: compact JSON, UTF-8."""
    return message.model_dump_json().encode()


def headers_for(message: Message) -> list[tuple[str, bytes]]:
    return [(TYPE_HEADER, type(message).__name__.encode())]


def decode(model: type[M], value: bytes | None) -> M:
    """Parse a record value; raises `pydantic.ValidationError` (a ValueError) when invalid.

    The value is JSON, or JSON in the Confluent wire format (schema registry mode,
    `acesteps.kafka.schema_registry`): both are read, whatever this process writes.
    """
    if value is None:
        raise ValueError(f"{model.__name__} record has no value (tombstone)")
    return model.model_validate_json(json_of(value))


def json_of(value: bytes) -> bytes:
    """The JSON of a record value: the value itself, or what follows the 5-byte header of the
    Confluent wire format (magic byte 0, 4-byte schema id); a JSON text never starts with 0."""
    if value[:1] == b"\x00":
        if len(value) < 5:
            raise ValueError(f"a schema registry header of {len(value)} bytes, not 5")
        return value[5:]
    return value
