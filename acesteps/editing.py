"""Editing a track: the tasks, their limits, and the source a request edits.

A request with a ``task`` edits a source instead of making a track from text alone:

- ``repaint``: regenerate the window ``repaint_start``..``repaint_end`` (seconds) of the
  source; the rest of the track is the source's own samples (the generator splices them back,
  `generator.editing`);
- ``extend``: add ``extend_before`` or ``extend_after`` seconds of new music before or after
  the source (one side per request), which is kept as it is;
- ``cover``: the source's structure in a new style (the prompt, tags and lyrics);
  ``cover_strength`` (0-1, default 1) is how closely it follows the source. Only checkpoints
  with an audio tokenizer can (the tiny test checkpoint cannot: refused, ``task_unsupported``);
- ``extract``: one instrument's track (``stem``: vocals, drums, ...) out of the source. Only
  the base and SFT checkpoints were trained for it; turbo checkpoints refuse it
  (`acesteps.models.TASKS`).

The source is either a finished track of this service (``source_track``, its request id) or a
file uploaded with ``POST /api/uploads`` (``source_upload``, its CID). The API resolves it to
an `EditSource` (CID, audioHash, duration), which the request record carries: the generator
fetches the bytes by CID and refuses bytes whose keccak256 is not that audioHash, and the
manifest records it, so that anyone can follow a track to what it was made from.

The length of an edit follows its source: a repaint or a cover is as long as the source, an
extension the source plus the added seconds (at most `acesteps.options.MAX_DURATION_S`).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from acesteps.types import Bytes32Hex, Cid, RequestId

__all__ = [
    "EDIT_TASKS",
    "MAX_SOURCE_BYTES",
    "MIN_EXTEND_S",
    "MIN_REPAINT_S",
    "MIN_SOURCE_S",
    "PIPELINE_TASKS",
    "EditSource",
    "EditTask",
    "Stem",
    "edit_duration",
]

EditTask = Literal["repaint", "extend", "cover", "extract"]
EDIT_TASKS: Final[tuple[str, ...]] = ("repaint", "extend", "cover", "extract")
PIPELINE_TASKS: Final[dict[str, str]] = {
    "repaint": "repaint",
    "extend": "repaint",  # of the source padded with silence
    "cover": "cover",
    "extract": "extract",
}
"""The pipeline task each edit runs (what a served model's ``tasks`` must list)."""
Stem = Literal[
    "vocals",
    "backing_vocals",
    "drums",
    "bass",
    "guitar",
    "keyboard",
    "percussion",
    "strings",
    "synth",
    "fx",
    "brass",
    "woodwinds",
]
"""The instrument tracks ACE-Step 1.5 names (its ``TRACK_NAMES``)."""

MAX_SOURCE_BYTES: Final = 512 << 20
"""The most bytes a reader fetches for a source (uploads have a lower limit of their own)."""
MIN_REPAINT_S: Final = 1.0
"""The shortest window a repaint regenerates."""
MIN_EXTEND_S: Final = 1.0
"""The fewest seconds an extension adds."""
MIN_SOURCE_S: Final = 5.0
"""The shortest source (track or upload) an edit accepts: the shortest track
(`acesteps.options.MIN_DURATION_S`), as a repaint or cover is as long as its source."""


class EditSource(BaseModel):
    """What an edit starts from, as the API resolved it (never written by a client)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["track", "upload"] = Field(
        description="track: a finished track of this service; upload: an uploaded file"
    )
    request_id: RequestId | None = Field(
        None,
        description="track: the request that made it",
        exclude_if=lambda value: value is None,
    )
    cid: Cid = Field(description="where its bytes are (IPFS)")
    audio_hash: Bytes32Hex = Field(
        description="keccak256 of its bytes: a track's registered audioHash, an upload's as "
        "computed when it was uploaded; the generator refuses other bytes"
    )
    duration_s: float = Field(gt=0, description="its length in seconds")

    @model_validator(mode="after")
    def _kind(self) -> EditSource:
        if (self.kind == "track") != (self.request_id is not None):
            raise ValueError("a track source names its request_id, an upload none")
        return self


def edit_duration(
    source_s: float, extend_before: float | None, extend_after: float | None
) -> float:
    """The length of an edit's track: its source's, plus what an extension adds."""
    return round(source_s + (extend_before or 0.0) + (extend_after or 0.0), 6)
