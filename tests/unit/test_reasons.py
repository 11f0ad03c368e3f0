"""`publisher.reasons.fit_reason`: failure reasons cut for ``markFailed``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publisher.reasons import ELLIPSIS, MAX_REASON_BYTES, fit_reason


def utf8_len(text: str) -> int:
    return len(text.encode())


@pytest.mark.parametrize(
    "reason", ["", "out of GPU memory", "é" * 128, "x" * MAX_REASON_BYTES, "生成失败" * 21]
)
def test_a_reason_that_fits_is_sent_whole(reason: str) -> None:
    assert utf8_len(reason) <= MAX_REASON_BYTES
    assert fit_reason(reason) == reason


def test_a_long_reason_is_cut_at_a_word_boundary_with_an_ellipsis() -> None:
    reason = "model_error: " + " ".join(f"word{n}" for n in range(100))
    cut = fit_reason(reason)
    assert cut.endswith(ELLIPSIS)
    assert utf8_len(cut) <= MAX_REASON_BYTES
    kept = cut.removesuffix(ELLIPSIS)
    assert reason.startswith(kept)
    assert reason[len(kept)] == " "  # the next character starts a new word
    assert kept.split()[-1] in reason.split()  # the last word is whole


def test_a_cut_never_splits_a_multi_byte_character() -> None:
    # Two-byte (é), three-byte (€, 音) and four-byte (🎵) characters, no spaces: the cut falls
    # at a character boundary, since no word boundary exists.
    for char in ("é", "€", "音", "🎵"):
        for lead in range(4):  # shift the characters against the 256-byte limit
            reason = "x" * lead + char * 200
            cut = fit_reason(reason)
            assert utf8_len(cut) <= MAX_REASON_BYTES
            kept = cut.removesuffix(ELLIPSIS)
            assert cut.endswith(ELLIPSIS) and reason.startswith(kept)
            # The most characters that fit with the ellipsis: nothing was lost but the cut one.
            room = MAX_REASON_BYTES - utf8_len(ELLIPSIS)
            assert room - utf8_len(char) < utf8_len(kept) <= room


def test_multi_byte_words_are_cut_between_words() -> None:
    reason = " ".join(["音楽の生成に失敗しました"] * 30)  # 36 bytes a word, 1 a space
    kept = fit_reason(reason).removesuffix(ELLIPSIS)
    assert kept.split(" ") == ["音楽の生成に失敗しました"] * len(kept.split(" "))
    assert utf8_len(kept) <= MAX_REASON_BYTES - 3


def test_a_long_word_at_the_end_is_cut_inside_rather_than_dropping_half_the_room() -> None:
    reason = "hash mismatch: " + "ab" * 300  # a hex dump
    cut = fit_reason(reason)
    assert utf8_len(cut) == MAX_REASON_BYTES  # 253 ASCII bytes and the 3-byte ellipsis
    assert cut.startswith("hash mismatch: abab")


def test_lone_surrogates_become_question_marks() -> None:
    assert fit_reason("bad \udcff byte") == "bad ? byte"


@given(st.text(max_size=400), st.integers(min_value=4, max_value=300))
def test_any_text_fits_and_is_a_prefix(reason: str, limit: int) -> None:
    cut = fit_reason(reason, limit)
    assert utf8_len(cut) <= max(limit, 0)
    safe = reason.encode("utf-8", "replace").decode()
    if utf8_len(safe) <= limit:
        assert cut == safe
    else:
        assert cut.endswith(ELLIPSIS) and safe.startswith(cut.removesuffix(ELLIPSIS))
