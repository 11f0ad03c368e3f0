"""How topic records fold into a request's status (listener.api.updates)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from acesteps.messages import (
    ChainOrigin,
    GenerationFailed,
    GenerationProgress,
    GenerationRequest,
    GenerationRevoked,
    Message,
    Registered,
    RegistrationReorged,
    TrackFinalized,
    TrackPublished,
)
from listener.api.models import Generation, Status
from listener.api.updates import apply
from tests.factories import track_published

RID = "0x" + "11" * 32
ORIGIN = ChainOrigin(
    chain_id=31337,
    contract="0x" + "12" * 20,
    block_number=5,
    block_hash="0x" + "22" * 32,
    tx_hash="0x" + "33" * 32,
    log_index=0,
)
REQUEST = GenerationRequest(
    request_id=RID,
    source="chain",
    prompt="rain on a tin roof",
    duration_s=12,
    requester="0x" + "44" * 20,
    chain=ORIGIN,
)
TRACK = track_published(RID, duration_s=12, seed=99, size_bytes=1234)
SECOND = TRACK.model_copy(update={"tx_hash": "0x" + "55" * 32, "block_number": 50})
REINCLUDED = REQUEST.model_copy(
    update={"chain": ORIGIN.model_copy(update={"block_hash": "0x" + "66" * 32, "block_number": 6})}
)
GENERATING = GenerationProgress(request_id=RID, stage="generating", worker="g1")
PUBLISHING = GenerationProgress(request_id=RID, stage="publishing", worker="p1")
FAILED = GenerationFailed(request_id=RID, stage="publisher", code="ipfs", message="down")
REVOKED = GenerationRevoked(
    request_id=RID,
    reason="reorg",
    chain_id=31337,
    contract="0x" + "12" * 20,
    block_number=5,
    block_hash="0x" + "22" * 32,
)


def reorged(track: TrackPublished) -> RegistrationReorged:
    fields = {k: getattr(track, k) for k in Registered.model_fields}
    return RegistrationReorged(**fields, reason="reorg")


def finalized(track: TrackPublished) -> TrackFinalized:
    fields = {k: getattr(track, k) for k in Registered.model_fields}
    return TrackFinalized(**fields, confirmations=12, finality="12 blocks")


def fold(messages: list[Message]) -> Generation:
    current: Generation | None = None
    for message in messages:
        current = apply(current, message) or current
    assert current is not None
    return current


@given(st.permutations([REQUEST, GENERATING, PUBLISHING, TRACK]))
def test_any_arrival_order_ends_completed_with_every_field(order: list[Message]) -> None:
    g = fold(order)
    assert g.status is Status.COMPLETED
    assert (g.prompt, g.source, g.request_tx_hash) == (REQUEST.prompt, "chain", ORIGIN.tx_hash)
    assert (g.audio_hash, g.cid, g.tx_hash, g.seed) == (
        TRACK.audio_hash,
        TRACK.cid,
        TRACK.tx_hash,
        99,
    )
    assert g.model_id == "tiny-acestep-v1" and g.error is None


def test_progress_only_moves_forward() -> None:
    g = fold([REQUEST, PUBLISHING, GENERATING])
    assert g.status is Status.PUBLISHING
    assert fold([REQUEST, GENERATING]).status is Status.GENERATING
    assert fold([REQUEST]).status is Status.QUEUED


def test_a_registration_outranks_a_failure_in_either_order() -> None:
    for order in ([REQUEST, TRACK, FAILED], [REQUEST, FAILED, TRACK]):
        g = fold(order)
        assert g.status is Status.COMPLETED and g.error is None, order
    failed = fold([REQUEST, GENERATING, FAILED, PUBLISHING])
    assert failed.status is Status.FAILED and failed.error is not None
    assert (failed.error.stage, failed.error.code) == ("publisher", "ipfs")


def test_a_revoked_request_stays_revoked_whatever_the_tracks_topic_says() -> None:
    for order in ([REQUEST, REVOKED, TRACK], [REQUEST, TRACK, REVOKED], [TRACK, REQUEST, REVOKED]):
        g = fold(order)
        assert g.status is Status.REVOKED and g.error is not None, order
        assert g.error.code == "revoked"


def test_a_registration_dropped_by_a_reorg_goes_back_to_publishing_then_final() -> None:
    dropped = fold([REQUEST, TRACK, reorged(TRACK)])
    assert dropped.status is Status.PUBLISHING and dropped.tx_hash is None
    again = fold([REQUEST, TRACK, reorged(TRACK), SECOND, finalized(SECOND)])
    assert again.status is Status.COMPLETED and again.tx_hash == SECOND.tx_hash and again.final
    # A late word about the dropped transaction changes nothing.
    late = fold([REQUEST, TRACK, reorged(TRACK), SECOND, finalized(TRACK), reorged(TRACK)])
    assert late.status is Status.COMPLETED and late.tx_hash == SECOND.tx_hash and not late.final


def test_a_request_back_on_chain_after_its_revocation_is_followed_again() -> None:
    back = fold([REQUEST, REVOKED, REINCLUDED])
    assert back.status is Status.QUEUED and back.error is None
    assert back.request_tx_hash == REINCLUDED.chain.tx_hash  # type: ignore[union-attr]
    assert fold([REQUEST, REVOKED, REINCLUDED, TRACK]).status is Status.COMPLETED


@given(st.permutations([0, 0, 0, 1, 1, 1, 1, 2]))
def test_the_record_does_not_depend_on_how_the_topics_interleave(topics: list[int]) -> None:
    # One request's topics, each in its own (partition) order: revoked and back on chain;
    # its first registration dropped, registered again, final; a late failure.
    queues: list[list[Message]] = [
        [REQUEST, REVOKED, REINCLUDED],
        [TRACK, reorged(TRACK), SECOND, finalized(SECOND)],
        [FAILED],
    ]
    order = [queues[topic].pop(0) for topic in topics]
    g = fold(order)
    assert (g.status, g.tx_hash, g.final, g.error) == (
        Status.COMPLETED,
        SECOND.tx_hash,
        True,
        None,
    ), order


def test_a_duplicate_request_keeps_the_recorded_seed_and_creation_time() -> None:
    g = fold([REQUEST, TRACK])
    again = apply(g, REQUEST)
    assert again is not None and again.seed == 99 and again.created_at == g.created_at


def test_denoising_steps_show_while_generating_and_only_move_forward() -> None:
    def steps(step: int, eta: float) -> GenerationProgress:
        return GenerationProgress(
            request_id=RID, stage="generating", worker="g1", step=step, steps=8, eta_s=eta
        )

    g = fold([REQUEST, GENERATING, steps(2, 3.0), steps(6, 1.0), steps(4, 2.0)])
    assert g.status is Status.GENERATING and g.progress is not None
    assert (g.progress.steps_done, g.progress.steps_total, g.progress.percent) == (6, 8, 75.0)
    assert g.progress.eta_s == 1.0
    # Steps announced before the request itself still count; once publishing, they stop.
    early = fold([steps(1, 7.0), REQUEST])
    assert early.status is Status.GENERATING and early.progress is not None
    done = fold([REQUEST, steps(8, 0.0), PUBLISHING, steps(3, 5.0)])
    assert done.status is Status.PUBLISHING and done.progress is not None
    assert done.progress.steps_done == 8
