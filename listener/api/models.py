"""What the HTTP API accepts and answers (JSON, camelCase), and the status of a request.

`Generation` is the public record of one request, from the chain or from HTTP; the status
projection keeps it (`listener.api.store`) and every endpoint answers with it. Its statuses
only move forward: ``queued`` -> ``generating`` -> ``publishing`` -> one of ``completed``,
``failed`` or ``revoked``, which are final.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from acesteps.messages import (
    MAX_DURATION_S,
    MAX_LYRICS_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MIN_DURATION_S,
    clean_text,
)

__all__ = ["ApiError", "ErrorBody", "GenerateBody", "Generation", "Status", "TrackError"]


class Status(StrEnum):
    QUEUED = "queued"
    GENERATING = "generating"
    PUBLISHING = "publishing"
    COMPLETED = "completed"
    FAILED = "failed"
    REVOKED = "revoked"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def final(self) -> bool:
        return self.rank == FINAL_RANK


FINAL_RANK = 3
_RANK = {
    Status.QUEUED: 0,
    Status.GENERATING: 1,
    Status.PUBLISHING: 2,
    Status.COMPLETED: FINAL_RANK,
    Status.FAILED: FINAL_RANK,
    Status.REVOKED: FINAL_RANK,
}


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


# What `clean_text` refuses, as JSON Schema patterns for the OpenAPI document (clients and
# property-based tests see the same rules the server applies).
_CTRL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
TEXT_PATTERN = f"^[^{_CTRL}]*$"
PROMPT_PATTERN = f"^[^{_CTRL}]*[^{_CTRL}\\s][^{_CTRL}]*$"  # and not only whitespace


class GenerateBody(_Camel):
    """``POST /api/generate``: the same limits as the requests topic (`acesteps.messages`)."""

    prompt: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS, strip_whitespace=True)
    ] = Field(
        description="what the track should sound like",
        json_schema_extra={"pattern": PROMPT_PATTERN},
    )
    duration: float = Field(
        30, ge=MIN_DURATION_S, le=MAX_DURATION_S, description="length of the track in seconds"
    )
    lyrics: Annotated[
        str,
        StringConstraints(max_length=MAX_LYRICS_CHARS),
        Field(json_schema_extra={"pattern": TEXT_PATTERN}),
    ] = ""
    tags: list[
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=MAX_TAG_CHARS),
            Field(json_schema_extra={"pattern": TEXT_PATTERN}),
        ]
    ] = Field(default_factory=list, max_length=MAX_TAGS, description="genre, mood, instruments")
    format: Literal["mp3", "wav"] = "mp3"
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="fix it to reproduce a track")

    @field_validator("prompt", "lyrics")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return clean_text(value, str(info.field_name))

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return [clean_text(tag, "tag") for tag in value]

    @field_validator("duration", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        # JSON true would otherwise be read as 1 second.
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value


class TrackError(_Camel):
    stage: str
    code: str
    message: str


class Generation(_Camel):
    """One request and how far it got."""

    id: str = Field(description="requestId: 0x + 64 lowercase hex")
    status: Status
    source: Literal["chain", "http"] | None = None
    prompt: str | None = None
    lyrics: str | None = None
    tags: list[str] = Field(default_factory=list)
    duration: float | None = None
    format: Literal["mp3", "wav"] | None = None
    seed: int | None = None
    requester: str | None = None
    audio_url: str | None = None
    audio_hash: str | None = None
    cid: str | None = None
    ipfs_urls: list[str] = Field(default_factory=list)
    size_bytes: int | None = None
    model: str | None = None
    tx_hash: str | None = Field(None, description="the registerTrack transaction")
    block_number: int | None = None
    chain_id: int | None = None
    contract: str | None = None
    request_tx_hash: str | None = Field(None, description="requestGeneration (chain requests)")
    error: TrackError | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def public(self, base_url: str) -> dict[str, object]:
        """The JSON body of an answer; ``audioUrl`` once there is a file to fetch."""
        audio_url = f"{base_url}/api/generations/{self.id}/audio" if self.cid else None
        return self.model_copy(update={"audio_url": audio_url}).model_dump(
            mode="json", by_alias=True
        )


class ApiError(_Camel):
    code: str = Field(description="stable, machine-readable: invalid_request, not_found, ...")
    message: str
    field: str | None = Field(None, description="the offending field of the request body")


class ErrorBody(_Camel):
    error: ApiError
