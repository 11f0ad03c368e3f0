"""How each record on the topics moves a request's `Generation` (pure functions).

The status projection (`listener.api.projection`) reads ``PREFIX.requests.v1``,
``PREFIX.progress.v1``, ``PREFIX.tracks.v1`` and ``PREFIX.failures.v1`` and folds every
record into the request's record with `apply`. Records of different topics arrive in any
order (a progress hint may come before the request itself), so `apply` merges: request
fields fill in whenever the request is seen, and the status only moves forward. The first
final status wins: a request that completed stays completed even if a late revocation or a
duplicate failure follows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from acesteps.messages import (
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    GenerationRevoked,
    Message,
    TrackPublished,
)
from listener.api.models import Generation, Status, TrackError

__all__ = ["apply", "from_request"]


def from_request(request: GenerationRequest) -> dict[str, object]:
    """The fields of a `Generation` that its request defines."""
    return {
        **request.options(),
        "source": request.source,
        "requester": request.requester,
        "chain_id": request.chain.chain_id if request.chain else None,
        "contract": request.chain.contract if request.chain else None,
        "request_tx_hash": request.chain.tx_hash if request.chain else None,
        "created_at": request.requested_at,
    }


def _advance(current: Generation, status: Status, **fields: object) -> Generation:
    if current.status.final or status.rank < current.status.rank:
        status = current.status
        if current.status.final:
            fields = {}  # a final record is never rewritten by a later event
    return current.model_copy(update={"status": status, "updated_at": datetime.now(UTC), **fields})


def apply(current: Generation | None, message: Message) -> Generation | None:
    """``current`` after ``message``; None when the message is not about a request."""
    rid = getattr(message, "request_id", None)
    if rid is None:
        return None
    base = current or Generation(id=rid, status=Status.QUEUED)
    match message:
        case GenerationRequest():
            # Request fields describe the request whatever its status; never overwrite a
            # seed the track already recorded.
            # A request read after its track (the topics are read side by side) must not undo
            # what the track recorded: the seed, the chain it was registered on, ...
            fields = from_request(message)
            if current is not None:
                fields.pop("created_at")
                for name in ("seed", "chain_id", "contract", "format", "duration_s"):
                    if getattr(current, name) is not None:
                        fields.pop(name)
            return base.model_copy(update=fields)
        case GenerationProgress(stage=stage):
            return _advance(base, Status(stage))
        case TrackPublished():
            return _advance(
                base,
                Status.COMPLETED,
                audio_hash=message.audio_hash,
                cid=message.cid,
                ipfs_urls=list(message.urls),
                tx_hash=message.tx_hash,
                block_number=message.block_number,
                chain_id=message.chain_id,
                contract=message.contract,
                format=message.format or base.format,
                size_bytes=message.size_bytes,
                duration_s=message.duration_s or base.duration_s,
                seed=message.seed if message.seed is not None else base.seed,
                model=message.model_id,
            )
        case GenerationFailed():
            error = TrackError(stage=message.stage, code=message.code, message=message.message)
            return _advance(base, Status.FAILED, error=error)
        case GenerationRevoked():
            error = TrackError(stage="listener", code="revoked", message=message.reason)
            return _advance(base, Status.REVOKED, error=error)
    return None
