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
    assert g.model == "tiny-acestep-v1" and g.error is None


def test_progress_only_moves_forward() -> None:
    g = fold([REQUEST, PUBLISHING, GENERATING])
    assert g.status is Status.PUBLISHING
    assert fold([REQUEST, GENERATING]).status is Status.GENERATING
    assert fold([REQUEST]).status is Status.QUEUED


def test_the_first_final_status_wins() -> None:
    late_failure = fold([REQUEST, TRACK, FAILED])
    assert late_failure.status is Status.COMPLETED and late_failure.error is None
    revoked_then_track = fold([REQUEST, REVOKED, TRACK])
    assert revoked_then_track.status is Status.REVOKED and revoked_then_track.cid is None
    failed = fold([REQUEST, GENERATING, FAILED, PUBLISHING])
    assert failed.status is Status.FAILED and failed.error is not None
    assert (failed.error.stage, failed.error.code) == ("publisher", "ipfs")


def test_a_duplicate_request_keeps_the_recorded_seed_and_creation_time() -> None:
    g = fold([REQUEST, TRACK])
    again = apply(g, REQUEST)
    assert again is not None and again.seed == 99 and again.created_at == g.created_at
