"""What the model is asked for: a `Job`, built from a `GenerationRequest` without torch.

How a request becomes model input (ACE-Step 1.5 conventions):

- **caption** = the prompt, stripped, then ``", "`` and the tags, each stripped, in request
  order, without case-insensitive duplicates: ``prompt="dreamy lo-fi", tags=("piano", "Rain",
  "rain")`` gives ``"dreamy lo-fi, piano, Rain"``. ACE-Step's caption is one free-text
  description of genre, instruments, mood and production, commonly written as comma-separated
  descriptors, so tags read as more descriptors. The pipeline wraps the caption in its own
  template (instruction, ``# Caption``, ``# Metas`` with bpm/key/time signature, "N/A" where
  the request sets none, and the duration in whole seconds); that template is the
  pipeline's, not ours.
- **lyrics** = the request's lyrics with trailing whitespace removed; blank lyrics, and any
  ``instrumental`` request, become ``"[Instrumental]"``, ACE-Step's marker for a track
  without vocals (an empty lyric block is out of distribution for the lyric encoder).
- **conditioning** = the musical controls the request sets (`conditioning`): bpm, key, time
  signature in the template's ``# Metas`` block, the vocal language in its lyrics.
- **seed** = the request's seed, or, when it has none, the first four bytes of
  keccak256(request id) as a big-endian integer. A regenerated request (a crash before the
  Kafka commit) therefore gets the same seed, hence the same bytes, and the seed is recorded
  in `AudioReady` either way.
- **preset** (`generator.presets`): its tags follow the request's in the caption (the same
  de-duplication), and its LoRA adapter, if any, is the job's `Adapter`; jobs with different
  adapters (or scales) never share a pipeline call.
- **edit** (`generator.editing`): a request with a task edits a source; the job carries the
  pipeline's task (repaint or cover), its window and the decoded source. Jobs of different
  edits never share a pipeline call; variations of one edit (one source, one window) may.
- **model** = the served model (`acesteps.models`) the request names, or the operator's
  default: `generator.served` resolves it before the job is built. Jobs of different models
  never share a pipeline call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from acesteps.messages import GenerationRequest
from acesteps.models import DEFAULT_NAME
from acesteps.options import MAX_SEED
from acesteps.variations import default_seed
from generator.editing import Edit

__all__ = [
    "INSTRUMENTAL",
    "Adapter",
    "Conditioning",
    "Job",
    "Style",
    "build_caption",
    "conditioning",
    "effective_seed",
    "normalize_lyrics",
]

INSTRUMENTAL: Final = "[Instrumental]"


Conditioning = tuple[tuple[str, object], ...]
"""More keyword arguments of the pipeline call, sorted by name (see `conditioning`)."""


@dataclass(frozen=True, slots=True)
class Adapter:
    """The LoRA adapter a job runs with (its preset's): the safetensors file, its scale, and
    the sha256 of its bytes (what the manifest records; the model loads one adapter per
    digest)."""

    preset: str
    path: str
    scale: float
    digest: str


@dataclass(frozen=True, slots=True)
class Style:
    """What a request's preset adds: tags after the request's, and a LoRA adapter."""

    tags: tuple[str, ...] = ()
    adapter: Adapter | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One track to generate: everything its audio depends on, and nothing else."""

    caption: str
    lyrics: str
    duration_s: float
    seed: int
    conditioning: Conditioning = ()
    model: str = DEFAULT_NAME
    """The served model's name."""
    adapter: Adapter | None = None
    edit: Edit | None = None
    """An edit (`generator.editing`): the source and what the model does with it."""

    @property
    def task(self) -> str:
        """The pipeline's task: text2music, or the edit's (repaint, cover)."""
        return "text2music" if self.edit is None else self.edit.task

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed {self.seed} is outside 0..{MAX_SEED}")
        if not self.duration_s > 0:
            raise ValueError(f"duration {self.duration_s} is not positive")

    @classmethod
    def from_request(
        cls,
        request: GenerationRequest,
        model: str | None = None,
        style: Style | None = None,
        edit: Edit | None = None,
    ) -> Job:
        """The job of ``request`` on served model ``model`` (default: the one it names), in
        the ``style`` of its preset (`generator.presets`; None: no preset), editing as
        ``edit`` says (`generator.editing.plan_edit`; None: not an edit)."""
        style = style or Style()
        return cls(
            caption=build_caption(request.prompt, (*request.tags, *style.tags)),
            lyrics=INSTRUMENTAL if request.instrumental else normalize_lyrics(request.lyrics),
            duration_s=float(request.duration_s),
            seed=effective_seed(request),
            conditioning=conditioning(request),
            model=model or request.model or DEFAULT_NAME,
            adapter=style.adapter,
            edit=edit,
        )


def conditioning(request: GenerationRequest) -> Conditioning:
    """The request options that condition the model beyond caption, lyrics, duration and
    seed, as ``AceStepPipeline`` keyword arguments; the model passes them to the pipeline call
    and to its text template, and batches only jobs whose conditioning is equal. Each is
    mapped only when the request sets it, so tracks made without it keep their bytes:

    - ``bpm`` -> ``bpm`` (an integer), ``key`` -> ``keyscale`` ("F# minor"),
      ``time_signature`` -> ``timesignature`` (the template's string, "3");
    - ``vocal_language`` -> ``vocal_language``, the language line of the lyrics (the model
      uses the service's ``ACESTEPS_GENERATOR_VOCAL_LANGUAGE`` when the request sets none).
    """
    given: dict[str, object] = {}
    if request.bpm is not None:
        given["bpm"] = request.bpm
    if request.key is not None:
        given["keyscale"] = request.key
    if request.time_signature is not None:
        given["timesignature"] = str(request.time_signature)
    if request.vocal_language is not None:
        given["vocal_language"] = request.vocal_language
    return tuple(sorted(given.items()))


def build_caption(prompt: str, tags: tuple[str, ...] | list[str] = ()) -> str:
    """The prompt followed by the distinct tags, comma-separated."""
    parts = [prompt.strip()]
    seen = {parts[0].casefold()}
    for tag in tags:
        tag = tag.strip()
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            parts.append(tag)
    return ", ".join(p for p in parts if p)


def normalize_lyrics(lyrics: str) -> str:
    lyrics = lyrics.rstrip()
    return lyrics if lyrics.strip() else INSTRUMENTAL


def effective_seed(request: GenerationRequest) -> int:
    """The request's seed, or one derived from its id (stable across regenerations)."""
    return request.seed if request.seed is not None else default_seed(request.request_id)
