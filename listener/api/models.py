"""What the HTTP API accepts and answers (JSON, camelCase), and the status of a request.

`Generation` is the public record of one request, from the chain or from HTTP; the status
projection keeps it (`listener.api.store`) and every endpoint answers with it. Its statuses
move forward, ``queued`` -> ``generating`` -> ``publishing`` -> one of ``completed``,
``failed``, ``canceled`` or ``revoked``, except where the chain moves back
(`listener.api.updates`): a reorg that drops a registration takes ``completed`` back to
``publishing``, one that drops an on-chain request makes it ``revoked``, and its
re-inclusion brings it back. A completed record is settled once its registration is
``final``.
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

from acesteps.editing import EditSource
from acesteps.options import Extras, GenerationOptions, api_name
from acesteps.types import AudioFormat

__all__ = [
    "ApiError",
    "EditSourceRecord",
    "ErrorBody",
    "GenerateBody",
    "Generation",
    "Status",
    "StepProgress",
    "TrackError",
    "WebhookEvent",
]

WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=2048),
    Field(json_schema_extra={"format": "uri", "pattern": "^https?://"}),
]
WebhookEvent = Literal["queued", "generating", "publishing", "completed", "failed", "canceled"]
"""The statuses a webhook may announce (`listener.api.webhooks`)."""


class Status(StrEnum):
    QUEUED = "queued"
    GENERATING = "generating"
    PUBLISHING = "publishing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    REVOKED = "revoked"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def final(self) -> bool:
        """completed, failed, canceled or revoked: where a request ends (unless the chain
        moves back)."""
        return self.rank == FINAL_RANK


FINAL_RANK = 3
_RANK = {
    Status.QUEUED: 0,
    Status.GENERATING: 1,
    Status.PUBLISHING: 2,
    Status.COMPLETED: FINAL_RANK,
    Status.FAILED: FINAL_RANK,
    Status.CANCELED: FINAL_RANK,
    Status.REVOKED: FINAL_RANK,
}


_API_CONFIG = ConfigDict(
    alias_generator=api_name, populate_by_name=True, frozen=True, extra="forbid"
)


class _Camel(BaseModel):
    model_config = _API_CONFIG


class GenerateBody(GenerationOptions):
    """``POST /api/generate``: the request options (`acesteps.options`) under their API names,
    and the job's controls (not options: they never change the track, nor reach the manifest)."""

    model_config = _API_CONFIG
    deadline: datetime | None = Field(
        None,
        description="cancel the request if it is not published by then (RFC 3339, with a "
        "time zone; within 7 days); the header Cancel-After (a duration) does the same",
    )
    webhook: WebhookUrl | None = Field(
        None,
        description="a URL (https) the server calls when the request's status enters one of "
        "webhookEvents: Standard Webhooks, signed with the key's secret "
        "(GET /api/webhooks/secret); public addresses only",
    )
    webhook_events: tuple[WebhookEvent, ...] | None = Field(
        None,
        min_length=1,
        description="the statuses the webhook announces (with webhook; default: completed, "
        "failed, canceled)",
    )

    @field_validator("webhook_events")
    @classmethod
    def _events_need_a_webhook(
        cls, value: tuple[WebhookEvent, ...] | None, info: ValidationInfo
    ) -> tuple[WebhookEvent, ...] | None:
        if value is not None and info.data.get("webhook") is None:
            raise ValueError("give webhook too: the URL the events go to")
        return None if value is None else tuple(dict.fromkeys(value))


class StepProgress(_Camel):
    """How far the model is with a request: denoising steps, as its generator announces them
    (advisory: a retried request starts again)."""

    steps_done: int = Field(ge=0)
    steps_total: int = Field(ge=1)
    percent: float = Field(ge=0, le=100)
    eta_s: float | None = Field(None, description="the generator's estimate of the time left")


class TrackError(_Camel):
    stage: str
    code: str
    message: str


class EditSourceRecord(EditSource):
    """An edit's source (`acesteps.editing.EditSource`) in a record: camelCase, as the API
    names fields (``requestId``, ``audioHash``, ``duration``)."""

    model_config = ConfigDict(alias_generator=api_name, populate_by_name=True)

    @classmethod
    def of(cls, source: EditSource | None) -> EditSourceRecord | None:
        return None if source is None else cls.model_validate(source.model_dump())


def _absent(value: object) -> bool:
    """Fields left out of a record when they do not apply, so that the records of requests
    without variations keep their bytes."""
    return value is None


class Generation(Extras):
    """One request and how far it got: its options (`acesteps.options`; the essentials stay
    empty until the request itself is read) and what became of it."""

    model_config = _API_CONFIG
    id: str = Field(description="requestId: 0x + 64 lowercase hex")
    status: Status
    source: Literal["chain", "http"] | None = None
    prompt: str | None = None
    duration_s: float | None = None
    format: AudioFormat | None = None
    requester: str | None = None
    children: list[str] | None = Field(
        None,
        description="a request with variations: the ids of its variations 1 .. variations-1, "
        "in that order; each is a request with a record of its own (absent otherwise)",
        exclude_if=_absent,
    )
    parent: str | None = Field(
        None,
        description="a variation: the id of the request it is a variation of (absent otherwise)",
        exclude_if=_absent,
    )
    variation: int | None = Field(
        None,
        ge=1,
        le=3,
        description="a variation: its index among its parent's (the parent is 0; absent otherwise)",
        exclude_if=_absent,
    )
    edit_source: EditSourceRecord | None = Field(
        None,
        description="an edit (task): the source it was made from, as the API resolved it: a "
        "track's registered CID and audioHash, or an upload's (absent otherwise)",
        exclude_if=_absent,
    )
    audio_url: str | None = None
    audio_hash: str | None = None
    cid: str | None = None
    ipfs_urls: list[str] = Field(default_factory=list)
    size_bytes: int | None = None
    model: str | None = Field(
        None,
        description="the served model (GET /api/models): as the request named it (null: the "
        "operator's default), then the one that made the track",
    )
    model_id: str | None = Field(
        None, description="the checkpoint that made the track (its manifest's model.id)"
    )
    weights_digest: str | None = Field(
        None, description="the digest of that checkpoint's weights (its manifest's)"
    )
    adapter_digest: str | None = Field(
        None,
        description="the digest of the LoRA adapter of its style preset (its manifest's "
        "adapter.digest); null: none",
    )
    tx_hash: str | None = Field(None, description="the registerTrack transaction")
    block_number: int | None = None
    confirmations: int | None = Field(
        None, description="blocks on top of the registration's, with it, when last reported"
    )
    manifest_hash: str | None = Field(
        None, description="keccak256 of the generation manifest (provenanceOf; /manifest)"
    )
    manifest_cid: str | None = Field(None, description="where the generation manifest is pinned")
    final: bool = Field(
        False,
        description="the registration is final (a reorg can no longer drop it); until then "
        "a reorg may move a completed record back to publishing",
    )
    chain_id: int | None = None
    contract: str | None = None
    request_tx_hash: str | None = Field(None, description="requestGeneration (chain requests)")
    error: TrackError | None = None
    progress: StepProgress | None = Field(
        None, description="denoising steps while generating, as last announced"
    )
    queue_position: int | None = Field(
        None,
        ge=1,
        description="while queued, in GET /api/generations/{id}: 1 + the queued requests "
        "created before it (a guide: generators take requests partition by partition)",
    )
    deadline: datetime | None = Field(
        None, description="canceled if not published by then (deadline or Cancel-After)"
    )
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def public(self, base_url: str) -> dict[str, object]:
        """The JSON body of an answer; ``audioUrl`` once there is a file to fetch."""
        audio_url = f"{base_url}/api/generations/{self.id}/audio" if self.cid else None
        body = self.model_copy(update={"audio_url": audio_url}).model_dump(
            mode="json", by_alias=True
        )
        return {"id": body.pop("id"), "status": body.pop("status"), **body}


class ApiError(_Camel):
    code: str = Field(description="stable, machine-readable: invalid_request, not_found, ...")
    message: str
    field: str | None = Field(None, description="the offending field of the request body")


class ErrorBody(_Camel):
    error: ApiError
