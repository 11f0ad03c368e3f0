"""How each record on the topics moves a request's `Generation` (pure functions).

The status projection (`listener.api.projection`) reads ``PREFIX.requests.v1``,
``PREFIX.progress.v1``, ``PREFIX.tracks.v1`` and ``PREFIX.failures.v1`` and folds every
record into the request's record with `apply`. Records of one request on one topic arrive in
the order they were written (one key, one partition); records of different topics arrive in
any order. So the fold follows the chain with rules that give the same record whatever the
order across topics:

- the request's own topic decides whether it is on chain: a revocation makes it ``revoked``,
  a request read after its revocation (re-included in another block) brings it back;
- a revoked request stays revoked whatever its other topics say (a registration cannot
  outlive its request: the contract registers only pending requests, and a reorg that drops
  the request drops what followed it);
- the tracks topic decides whether it is registered: a `TrackPublished` makes it
  ``completed`` (not ``final``), a `RegistrationReorged` of that transaction takes it back
  to ``publishing``, a `TrackFinalized` of it makes it ``final``;
- a registration outranks a failure or a cancellation (it is on chain); progress hints only
  move forward.
"""

from __future__ import annotations

from datetime import UTC, datetime

from acesteps.messages import (
    GenerationCanceled,
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    GenerationRevoked,
    Message,
    RegistrationReorged,
    TrackFinalized,
    TrackPublished,
)
from listener.api.family import Deployment, child_ids
from listener.api.models import EditSourceRecord, Generation, Status, StepProgress, TrackError

__all__ = ["apply", "from_request"]


def from_request(
    request: GenerationRequest, deployment: Deployment | None = None
) -> dict[str, object]:
    """The fields of a `Generation` that its request defines. A parent's ``children`` come
    from its id (`listener.api.family`); an HTTP parent's need the ``deployment``, and are
    left out without it (its record keeps what the API stored on submit)."""
    fields: dict[str, object] = {
        **request.options(),
        "source": request.source,
        "requester": request.requester,
        "parent": request.parent_id,
        "variation": request.variation,
        "edit_source": EditSourceRecord.of(request.edit_source),
        "chain_id": request.chain.chain_id if request.chain else None,
        "contract": request.chain.contract if request.chain else None,
        "request_tx_hash": request.chain.tx_hash if request.chain else None,
        "deadline": request.deadline,
        "created_at": request.requested_at,
    }
    children = child_ids(request.request_id, request.variations, request.source, deployment)
    if request.variations is None or children is not None:
        fields["children"] = children
    return fields


def apply(
    current: Generation | None, message: Message, deployment: Deployment | None = None
) -> Generation | None:
    """``current`` after ``message``; None when the message is not about a request.
    ``deployment``: the registry of this API's HTTP requests (their parents' children)."""
    rid = getattr(message, "request_id", None)
    if rid is None:
        return None
    base = current or Generation(id=rid, status=Status.QUEUED)
    match message:
        case GenerationRequest():
            # A request read after its track (the topics are read side by side) must not undo
            # what the track recorded: the seed, the chain it was registered on, ...
            fields = from_request(message, deployment)
            if current is not None:
                fields.pop("created_at")
                for name in ("seed", "chain_id", "contract", "format", "duration_s", "model"):
                    if getattr(current, name) is not None:
                        fields.pop(name)
            if base.status is Status.REVOKED:
                # Read after its revocation on the same partition: back on the chain (a
                # transaction re-included after a reorg).
                fields.update(status=_registered_or(base, Status.QUEUED), error=None)
            return _changed(base, **fields)
        case GenerationProgress(stage=stage):
            if base.status.rank < Status(stage).rank:
                base = _changed(base, status=Status(stage))
            return _with_steps(base, message)
        case TrackPublished():
            status = base.status if base.status is Status.REVOKED else Status.COMPLETED
            return _changed(
                base,
                status=status,
                error=None if status is Status.COMPLETED else base.error,
                audio_hash=message.audio_hash,
                cid=message.cid,
                ipfs_urls=list(message.urls),
                tx_hash=message.tx_hash,
                block_number=message.block_number,
                confirmations=message.confirmations,
                manifest_hash=message.manifest_hash or base.manifest_hash,
                manifest_cid=message.manifest_cid or base.manifest_cid,
                final=False,
                chain_id=message.chain_id,
                contract=message.contract,
                format=message.format or base.format,
                size_bytes=message.size_bytes,
                duration_s=message.duration_s or base.duration_s,
                seed=message.seed if message.seed is not None else base.seed,
                model=message.model if message.model is not None else base.model,
                model_id=message.model_id,
                weights_digest=message.weights_digest or base.weights_digest,
                adapter_digest=message.adapter_digest or base.adapter_digest,
            )
        case TrackFinalized():
            if message.tx_hash != base.tx_hash:
                return base  # a registration that was replaced meanwhile
            return _changed(
                base,
                final=True,
                confirmations=message.confirmations,
                block_number=message.block_number,
            )
        case RegistrationReorged():
            if message.tx_hash != base.tx_hash:
                return base  # an older registration; the current one stands
            back = Status.PUBLISHING if base.status is Status.COMPLETED else base.status
            cleared = {"tx_hash": None, "block_number": None, "confirmations": None, "final": False}
            return _changed(base, status=back, **cleared)
        case GenerationFailed():
            if base.status in (Status.COMPLETED, Status.REVOKED):
                return base  # a registration, or the chain's own verdict, says more
            error = TrackError(stage=message.stage, code=message.code, message=message.message)
            return _changed(base, status=Status.FAILED, error=error)
        case GenerationCanceled():
            if base.status in (Status.COMPLETED, Status.REVOKED):
                return base  # registered after all, or the chain's own verdict
            code = "deadline_exceeded" if message.reason == "deadline" else "canceled"
            error = TrackError(stage=message.stage, code=code, message=message.message)
            return _changed(base, status=Status.CANCELED, error=error, progress=None)
        case GenerationRevoked():
            error = TrackError(stage="listener", code="revoked", message=message.reason)
            # The tracks topic keeps its say on the registration (read in any order with this):
            # should the request come back on chain, its record is what that topic said.
            return _changed(base, status=Status.REVOKED, error=error)
    return None


def _registered_or(g: Generation, status: Status) -> Status:
    return Status.COMPLETED if g.tx_hash else status


def _changed(g: Generation, **fields: object) -> Generation:
    return g.model_copy(update={"updated_at": datetime.now(UTC), **fields})


def _with_steps(g: Generation, message: GenerationProgress) -> Generation:
    """``g`` with the denoising steps ``message`` announces, while it is generating; only
    forward (the announcements of one model call arrive in order, a retry's are stale)."""
    if message.step is None or message.steps is None or g.status is not Status.GENERATING:
        return g
    if g.progress is not None and message.step <= g.progress.steps_done:
        return g
    progress = StepProgress(
        steps_done=message.step,
        steps_total=message.steps,
        percent=round(100 * min(message.step, message.steps) / message.steps, 1),
        eta_s=message.eta_s,
    )
    return _changed(g, progress=progress)
