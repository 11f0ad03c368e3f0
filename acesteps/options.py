"""What a caller asks for: the one definition of every request field.

`GenerationOptions` is the request as its author wrote it. Every surface derives from it:

- the topic message `acesteps.messages.GenerationRequest` (snake_case JSON) inherits it;
- the HTTP API's body ``GenerateBody`` inherits it under camelCase names (`api_name`), and
  the API's record ``Generation`` inherits `Extras`; the OpenAPI document is built from them;
- the JSON Schemas in ``schemas/`` are exported from the messages;
- ``acesteps generate`` builds its arguments from the fields (`acesteps.cli.options`), and
  the web page its form from the OpenAPI document.

So a new request field is one more field of `Extras` here, with a default that means "not
asked" (which keeps every surface backward compatible), plus the generator's use of it in
``generator/jobs.py``. ``tests/unit/test_options.py`` fails when a surface misses a field.

The limits are structural (lengths, ranges, formats): a value that validates is a request the
service accepts. What only the model can judge (token counts, the content policy) is checked
by the generator before any GPU work.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from acesteps.editing import EDIT_TASKS, MIN_EXTEND_S, MIN_REPAINT_S, EditTask, Stem
from acesteps.models import MODEL_NAME_PATTERN
from acesteps.musical import BPM_MAX, BPM_MIN, KEY_PATTERN, VOCAL_LANGUAGES, canonical_key
from acesteps.presets import PRESET_NAME_PATTERN
from acesteps.types import AudioFormat, Cid, RequestId

__all__ = [
    "MAX_DURATION_S",
    "MAX_LYRICS_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MIN_DURATION_S",
    "Essentials",
    "Extras",
    "GenerationOptions",
    "api_name",
    "clean_text",
    "edit_problems",
]

MIN_DURATION_S: Final = 5
MAX_DURATION_S: Final = 240
MAX_PROMPT_CHARS: Final = 1_000
MAX_LYRICS_CHARS: Final = 4_096
MAX_TAGS: Final = 16
MAX_TAG_CHARS: Final = 48
MAX_SEED: Final = 2**32 - 1

# Control characters a request may not carry (newlines, tabs and carriage returns may: lyrics
# are lines). The same set as a JSON Schema pattern, so that clients and property-based tests
# see the rule the server applies.
_CTRL: Final = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_CONTROL: Final = re.compile(f"[{_CTRL}]")
TEXT_PATTERN: Final = f"^[^{_CTRL}]*$"
PROMPT_PATTERN: Final = f"^[^{_CTRL}]*[^{_CTRL}\\s][^{_CTRL}]*$"  # and not only whitespace

_API_NAMES: Final = {"duration_s": "duration"}


def api_name(field: str) -> str:
    """A field's name in the HTTP API and on the command line (``duration_s`` -> ``duration``,
    others camelCase): the API keeps the names of its first public version."""
    return _API_NAMES.get(field, to_camel(field))


def clean_text(value: str, field: str) -> str:
    """``value`` if it is text a request may carry: no control characters (newlines and tabs
    are allowed), no lone surrogates (JSON allows them, UTF-8 cannot encode them)."""
    if _CONTROL.search(value):
        raise ValueError(f"{field} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid Unicode (a lone surrogate)") from None
    return value


Text = Annotated[str, Field(json_schema_extra={"pattern": TEXT_PATTERN})]
TimeSignature = Literal[2, 3, 4, 6]
VocalLanguage = Literal[VOCAL_LANGUAGES]  # type: ignore[valid-type]


def _unset(value: object) -> bool:
    """Options left out of records and manifests when not asked, so that those made before
    the option existed keep their bytes (and older readers, which refuse unknown fields, keep
    reading requests that do not set it)."""
    return value is None or value is False


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Essentials(_Frozen):
    """What every request says (or gets a default for): the text, the length, the format."""

    prompt: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS, strip_whitespace=True),
    ] = Field(
        description="what the track should sound like",
        json_schema_extra={"pattern": PROMPT_PATTERN},
    )
    duration_s: float = Field(
        30, ge=MIN_DURATION_S, le=MAX_DURATION_S, description="length of the track in seconds"
    )
    format: AudioFormat = Field(
        "mp3", description="mp3 (320 kbps CBR), wav (16-bit PCM) or flac (16-bit, lossless)"
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return clean_text(value, "prompt")

    @field_validator("duration_s", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        # JSON true would otherwise be read as 1 second.
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value


class Extras(_Frozen):
    """The optional inputs: each default means "not asked". New request fields go here."""

    lyrics: Annotated[Text, StringConstraints(max_length=MAX_LYRICS_CHARS)] = Field(
        "", description="the words to sing; empty for an instrumental"
    )
    tags: tuple[Annotated[Text, StringConstraints(min_length=1, max_length=MAX_TAG_CHARS)], ...] = (
        Field((), max_length=MAX_TAGS, description="genre, mood, instruments")
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="fix it to reproduce a track (default: from the id)"
    )
    model: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        description="the served model to use, by name (GET /api/models; default: the "
        "operator's default model)",
        exclude_if=_unset,
    )
    bpm: int | None = Field(
        None, ge=BPM_MIN, le=BPM_MAX, description="tempo in beats per minute", exclude_if=_unset
    )
    key: str | None = Field(
        None,
        max_length=16,
        json_schema_extra={"pattern": KEY_PATTERN},  # checked by `canonical_key`, in words
        description="the key: a note A-G, an optional # or b, then major or minor, e.g. "
        "'F# minor' (stored in that spelling)",
        exclude_if=_unset,
    )
    time_signature: TimeSignature | None = Field(
        None, description="beats per bar: 2, 3, 4 or 6", exclude_if=_unset
    )
    vocal_language: VocalLanguage | None = Field(
        None,
        description="the language of the lyrics (default: the service's, usually en)",
        exclude_if=_unset,
    )
    instrumental: bool = Field(
        False, description="no vocals (the lyrics must be empty)", exclude_if=_unset
    )
    variations: int | None = Field(
        None,
        ge=1,
        le=4,
        description="how many tracks to make, 1-4: this request's own and one request per "
        "further variation, each with the next seed (acesteps.variations)",
        exclude_if=_unset,
    )
    preset: str | None = Field(
        None,
        pattern=PRESET_NAME_PATTERN,
        description="a style preset of this deployment, by name (GET /api/presets): a LoRA "
        "adapter, tags, or both",
        exclude_if=_unset,
    )

    task: EditTask | None = Field(
        None,
        description="edit a source instead of starting from silence (acesteps.editing): "
        "repaint a window, extend before or after, cover, or extract a stem; the source is "
        "sourceTrack or sourceUpload, and the track is as long as the source (plus an "
        "extension)",
        exclude_if=_unset,
    )
    source_track: RequestId | None = Field(
        None,
        description="the source of an edit: a finished track of this service, by request id",
        exclude_if=_unset,
    )
    source_upload: Cid | None = Field(
        None,
        description="the source of an edit: a file uploaded with POST /api/uploads, by CID",
        exclude_if=_unset,
    )
    repaint_start: float | None = Field(
        None,
        ge=0,
        le=MAX_DURATION_S,
        description="repaint: where the window starts (s)",
        exclude_if=_unset,
    )
    repaint_end: float | None = Field(
        None,
        gt=0,
        le=MAX_DURATION_S,
        description="repaint: where the window ends (s)",
        exclude_if=_unset,
    )
    extend_before: float | None = Field(
        None,
        ge=MIN_EXTEND_S,
        le=MAX_DURATION_S,
        description="extend: seconds of new music before the source",
        exclude_if=_unset,
    )
    extend_after: float | None = Field(
        None,
        ge=MIN_EXTEND_S,
        le=MAX_DURATION_S,
        description="extend: seconds of new music after the source",
        exclude_if=_unset,
    )
    cover_strength: float | None = Field(
        None,
        ge=0,
        le=1,
        description="cover: how closely it follows the source, 0-1 (default 1)",
        exclude_if=_unset,
    )
    stem: Stem | None = Field(
        None,
        description="extract: the instrument track to take out of the source (base and sft "
        "models only)",
        exclude_if=_unset,
    )

    @field_validator("source_track", mode="before")
    @classmethod
    def _lower_id(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "repaint_start",
        "repaint_end",
        "extend_before",
        "extend_after",
        "cover_strength",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        return value

    @model_validator(mode="after")
    def _edit(self) -> Extras:
        for problem in edit_problems(self):
            raise ValueError(problem)
        return self

    @field_validator("variations")
    @classmethod
    def _one_is_unset(cls, value: int | None) -> int | None:
        return None if value == 1 else value  # one track is what every request makes

    @field_validator("bpm", "time_signature", "variations", mode="before")
    @classmethod
    def _integer(cls, value: object) -> object:
        if isinstance(value, bool):  # JSON true is not a number of beats
            raise ValueError("must be an integer")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else canonical_key(value)

    @model_validator(mode="after")
    def _instrumental(self) -> Extras:
        if self.instrumental and self.lyrics.strip():
            raise ValueError("an instrumental request carries no lyrics")
        return self

    @field_validator("lyrics", "tags")
    @classmethod
    def _text(cls, value: str | tuple[str, ...], info: ValidationInfo) -> str | tuple[str, ...]:
        name = str(info.field_name)
        if isinstance(value, str):
            return clean_text(value, name)
        return tuple(clean_text(tag, "tag") for tag in value)


_EDIT_PARAMETERS: Final = {
    "repaint": ("repaint_start", "repaint_end"),
    "extend": ("extend_before", "extend_after"),
    "cover": ("cover_strength",),
    "extract": ("stem",),
}


def edit_problems(extras: Extras) -> list[str]:
    """Why the edit fields of ``extras`` do not make one edit (empty: they do); fields are
    named as the API and the command line name them."""
    task = extras.task
    named = {name for names in _EDIT_PARAMETERS.values() for name in names}
    given = {name for name in named if getattr(extras, name) is not None}
    sources = [s for s in ("source_track", "source_upload") if getattr(extras, s) is not None]
    if task is None:
        if given or sources:
            fields = ", ".join(sorted(api_name(name) for name in [*given, *sources]))
            return [f"{fields}: only an edit (a task: {', '.join(EDIT_TASKS)}) takes these"]
        return []
    problems = []
    if len(sources) != 1:
        problems.append(f"task {task} edits one source: give sourceTrack or sourceUpload")
    if stray := sorted(given - set(_EDIT_PARAMETERS[task])):
        problems.append(f"task {task} does not take {', '.join(map(api_name, stray))}")
    if task == "repaint":
        start, end = extras.repaint_start, extras.repaint_end
        if start is None or end is None:
            problems.append("task repaint needs repaintStart and repaintEnd")
        elif end - start < MIN_REPAINT_S:
            problems.append(f"repaintEnd must be at least {MIN_REPAINT_S:g} s after repaintStart")
    if task == "extend" and (extras.extend_before is None) == (extras.extend_after is None):
        problems.append("task extend takes one of extendBefore and extendAfter")
    if task == "extract" and extras.stem is None:
        problems.append("task extract needs the stem to extract")
    return problems


class GenerationOptions(Extras, Essentials):
    """A request as its author wrote it (essentials first, then extras)."""

    def options(self) -> dict[str, object]:
        """The option fields and their values (without the fields a subclass adds)."""
        return {name: getattr(self, name) for name in GenerationOptions.model_fields}
