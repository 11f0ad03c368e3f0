"""The musical controls a request may set, and the values ACE-Step 1.5 knows for them.

The model reads them in the ``# Metas`` block of its text template (bpm, key, time signature)
and in the ``# Languages`` line of its lyrics (the vocal language); the values below are the
ones the model was trained with (ACE-Step 1.5's own constants). A request that does not set
one gets "N/A" in the template, exactly as before the controls existed, so tracks made
without them keep their bytes.

Keys are canonicalized to one spelling ("f# MINOR", "F♯ minor" -> "F# minor"), so two
requests that mean the same key give the same model input, hence the same bytes.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BPM_MAX",
    "BPM_MIN",
    "KEYS",
    "KEY_PATTERN",
    "TIME_SIGNATURES",
    "VOCAL_LANGUAGES",
    "canonical_key",
]

BPM_MIN: Final = 30
BPM_MAX: Final = 300

TIME_SIGNATURES: Final = (2, 3, 4, 6)
"""Beats per bar (2/4, 3/4, 4/4, 6/8 style): what the model's template calls timesignature."""

VOCAL_LANGUAGES: Final = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he",
    "hi", "hr", "ht", "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no",
    "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr",
    "uk", "ur", "vi", "yue", "zh", "unknown",
)  # fmt: skip
"""The lyric languages of ACE-Step 1.5 ("unknown": let the model guess)."""

_NOTES: Final = "ABCDEFG"
_ACCIDENTALS: Final = ("", "#", "b")
_MODES: Final = ("major", "minor")
KEYS: Final = tuple(f"{n}{a} {m}" for n in _NOTES for a in _ACCIDENTALS for m in _MODES)
"""Every key in its canonical spelling: a note, an optional ``#`` or ``b``, major or minor."""

KEY_PATTERN: Final = (
    r"^\s*([A-Ga-g])\s*([#♯b♭]?)\s*"
    r"([Mm][Aa][Jj](?:[Oo][Rr])?|[Mm][Ii][Nn](?:[Oo][Rr])?)\s*$"
)
"""What `canonical_key` accepts, as a regular expression that JSON Schema (ECMA-262) reads
the same way: the OpenAPI document and the topic schema carry it."""
_KEY: Final = re.compile(KEY_PATTERN)


def canonical_key(value: str) -> str:
    """``value`` in its canonical spelling; ValueError naming the accepted form otherwise."""
    match = _KEY.match(value)
    if match is None:
        raise ValueError(
            f"unknown key {value[:40]!r}: a note A-G, an optional # or b, then major or minor "
            "(e.g. 'C major', 'F# minor', 'Bb major')"
        )
    note, accidental, mode = match.groups()
    accidental = {"♯": "#", "♭": "b"}.get(accidental, accidental)
    mode = "major" if mode.lower().startswith("maj") else "minor"
    return f"{note.upper()}{accidental} {mode}"
