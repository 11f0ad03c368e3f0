"""An edit's source audio, what the model is asked to do with it, and the splice after.

1. **Fetch** (`Sources`): the bytes by CID from Kubo, refused (``source_mismatch``) unless
   their keccak256 is the audioHash the API resolved (a track's registered one, an upload's),
   and decoded with libsndfile as int16 (``source_unreadable`` otherwise). Our WAV and FLAC
   files decode to exactly the samples they were encoded from; a mono source plays on both
   channels; a source at another rate than 44.1 kHz is resampled to it (soxr, VHQ).
2. **Plan** (`plan_edit`): an extension is a repaint of the source padded with silence (the
   pipeline takes the track's length from its source audio), so the model only ever runs
   ``repaint`` (a window of the track), ``cover`` or ``extract`` (the whole track). The
   source is given to the pipeline at 48 kHz (soxr from 44.1 kHz), cut or padded to the
   job's latent frames.
3. **Splice** (`splice`): the pipeline regenerates the whole clip and normalizes its peak,
   so its samples outside a repaint window differ from the source's (by up to 0.036 on the
   tiny checkpoint, docs/decisions.md "Editing"). After resampling to 44.1 kHz, the samples
   outside the window are replaced by the source's own; inside, the first and last
   `FADE_S` cross-fade from and to the source, except at the track's start and end. So a
   WAV or FLAC repaint of a WAV or FLAC source has, outside the window, exactly the source's
   samples (tested); an MP3 has them up to the MP3 encoding.

A cover needs the checkpoint's audio tokenizer and detokenizer, and an extraction a base or
SFT checkpoint: a model without them (the tiny test checkpoint, turbo) refuses with
``task_unsupported`` before any work (`generator.model.Model.check_task`).
"""

from __future__ import annotations

import functools
import io
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboError
from acesteps.manifest import EditPart
from acesteps.messages import GenerationRequest
from generator.errors import PermanentGeneratorError, RetryableGeneratorError

__all__ = [
    "FADE_S",
    "Edit",
    "SourceAudio",
    "SourceMismatch",
    "SourceUnavailable",
    "SourceUnreadable",
    "Sources",
    "TaskUnsupported",
    "decode_source",
    "plan_edit",
    "splice",
    "splicer",
]

RATE: Final = 44_100
MODEL_RATE: Final = 48_000
FADE_S: Final = 0.05
"""The cross-fade at each inner edge of a repaint window."""
CACHED_SOURCES: Final = 8


class SourceMismatch(PermanentGeneratorError):
    """The bytes at the source's CID are not the ones its audioHash names."""

    code = "source_mismatch"


class SourceUnreadable(PermanentGeneratorError):
    """The source's bytes are not audio this service can decode."""

    code = "source_unreadable"


class TaskUnsupported(PermanentGeneratorError):
    """The served model cannot run the request's task."""

    code = "task_unsupported"


class SourceUnavailable(RetryableGeneratorError):
    """IPFS did not give the source's bytes (retried)."""

    code = "source_unavailable"


@dataclass(frozen=True, eq=False)
class SourceAudio:
    """A decoded source: ``pcm`` float32 ``[2, frames]`` at 44.1 kHz, each sample an int16
    over 32767 (so the WAV encoder gives back exactly the int16)."""

    audio_hash: str
    pcm: npt.NDArray[np.float32]

    @property
    def frames(self) -> int:
        return int(self.pcm.shape[-1])


@dataclass(frozen=True, slots=True)
class Edit:
    """What the model does with a source: equal edits are equal model inputs."""

    task: Literal["repaint", "cover", "extract"]
    audio_hash: str
    source_frames: int
    pad_before_s: float = 0.0
    pad_after_s: float = 0.0
    window: tuple[float, float] | None = None
    """repaint: the regenerated seconds of the track (after padding)."""
    cover_strength: float | None = None
    stem: str | None = None
    """extract: the instrument track to take out (the pipeline's ``track_name``)."""
    source: SourceAudio | None = field(default=None, compare=False, repr=False)

    def part(self) -> EditPart:
        """What the manifest records of it (``edit``)."""
        start, end = self.window or (None, None)
        return EditPart(
            task=self.task,
            source_frames=self.source_frames,
            pad_before_s=self.pad_before_s,
            pad_after_s=self.pad_after_s,
            window_start_s=start,
            window_end_s=end,
            cover_strength=self.cover_strength,
            stem=self.stem,
            splice_fade_s=FADE_S if self.task == "repaint" else None,
        )

    @classmethod
    def of_part(cls, part: EditPart, source: SourceAudio) -> Edit:
        """The edit a manifest's ``edit`` part records, run on the decoded ``source``."""
        window = None
        if part.window_start_s is not None and part.window_end_s is not None:
            window = (part.window_start_s, part.window_end_s)
        return cls(
            part.task,
            source.audio_hash,
            part.source_frames,
            part.pad_before_s,
            part.pad_after_s,
            window,
            part.cover_strength,
            part.stem,
            source,
        )

    def pipeline_kwargs(self, frames_48k: int) -> dict[str, object]:
        """The source and task arguments of the pipeline call (``src_audio`` as numpy; the
        model makes it a tensor), the source padded and fit to ``frames_48k``."""
        if self.source is None:
            raise ValueError("an edit runs with its source audio")
        padded = np.pad(self.source.pcm, ((0, 0), (_frames(self.pad_before_s), 0)))
        padded = np.pad(padded, ((0, 0), (0, _frames(self.pad_after_s))))
        at_48k = soxr.resample(padded.T, RATE, MODEL_RATE, quality="VHQ").T
        fitted = np.zeros((2, frames_48k), np.float32)
        n = min(frames_48k, at_48k.shape[-1])
        fitted[:, :n] = at_48k[:, :n]
        kwargs: dict[str, object] = {"task_type": self.task, "src_audio": fitted}
        if self.window is not None:
            kwargs |= {"repainting_start": self.window[0], "repainting_end": self.window[1]}
        if self.cover_strength is not None:
            kwargs["audio_cover_strength"] = self.cover_strength
        if self.stem is not None:
            kwargs["track_name"] = self.stem
        return kwargs


def _frames(seconds: float) -> int:
    return round(seconds * RATE)


def decode_source(data: bytes, source: EditSource) -> SourceAudio:
    """``data`` as the source ``source`` names, or `SourceMismatch` / `SourceUnreadable`."""
    got = keccak256_hex(data)
    if got != source.audio_hash:
        raise SourceMismatch(
            f"the bytes at {source.cid} hash to {got}, not the source's audioHash "
            f"{source.audio_hash}"
        )
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise SourceUnreadable(f"the source {source.cid} is not audio: {exc}") from None
    if samples.shape[1] > 2 or samples.shape[0] == 0:
        raise SourceUnreadable(
            f"the source has {samples.shape[1]} channels and "
            f"{samples.shape[0]} frames; 1-2 channels of audio are edited"
        )
    pcm = samples.T.astype(np.float32) / np.float32(32767)
    if pcm.shape[0] == 1:
        pcm = np.repeat(pcm, 2, axis=0)
    if rate != RATE:
        pcm = np.clip(soxr.resample(pcm.T, rate, RATE, quality="VHQ").T, -1.0, 1.0)
    return SourceAudio(source.audio_hash, np.ascontiguousarray(pcm, dtype=np.float32))


def plan_edit(request: GenerationRequest, source: SourceAudio | None = None) -> Edit | None:
    """The `Edit` of ``request`` (None: not an edit). Without ``source`` the edit describes
    the request only (its source frames unknown: 0 stands for them); the worker plans again
    with the fetched source."""
    if request.task is None or request.edit_source is None:
        return None
    frames = source.frames if source is not None else 0
    digest = request.edit_source.audio_hash
    if request.task == "cover":
        strength = 1.0 if request.cover_strength is None else request.cover_strength
        return Edit("cover", digest, frames, cover_strength=strength, source=source)
    if request.task == "extract":
        return Edit("extract", digest, frames, stem=request.stem, source=source)
    if request.task == "repaint":
        start, end = request.repaint_start, request.repaint_end
        assert start is not None and end is not None  # the options' rules
        return Edit("repaint", digest, frames, window=(start, end), source=source)
    before, after = request.extend_before or 0.0, request.extend_after or 0.0
    source_s = frames / RATE if source is not None else request.edit_source.duration_s
    window = (0.0, before) if before else (source_s, source_s + after)
    return Edit("repaint", digest, frames, before, after, window, source=source)


def splice(pcm: npt.NDArray[np.float32], edit: Edit) -> npt.NDArray[np.float32]:
    """``pcm`` (44.1 kHz, the track's exact frames) with the source's samples outside a repaint
    window, cross-faded over `FADE_S` (at most a quarter of the window) inside it where the
    source goes on past the window's edge; an extension's padding is the model's alone, so an
    extension joins its source without a fade."""
    if edit.task != "repaint" or edit.window is None or edit.source is None:
        return pcm
    total = pcm.shape[-1]
    at = _frames(edit.pad_before_s)
    n = max(0, min(edit.source.frames, total - at))
    base = pcm.copy()  # the source where it is, the model's samples over the padding
    base[:, at : at + n] = edit.source.pcm[:, :n]
    start, end = (min(total, _frames(t)) for t in edit.window)
    out = base.copy()
    out[:, start:end] = pcm[:, start:end]
    fade = min(_frames(FADE_S), (end - start) // 4)
    if fade > 0:
        ramp = (np.arange(1, fade + 1, dtype=np.float32) / np.float32(fade + 1))[None, :]
        a, b = slice(start, start + fade), slice(end - fade, end)
        if start > 0:  # not at the track's start or end: nothing to join there
            out[:, a] = base[:, a] * (1 - ramp) + pcm[:, a] * ramp
        if end < total:
            out[:, b] = pcm[:, b] * (1 - ramp) + base[:, b] * ramp
    return out


def splicer(
    edit: Edit | None,
) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] | None:
    """What `generator.audio.encode` applies to a job's samples: its edit's `splice`."""
    return None if edit is None else functools.partial(splice, edit=edit)


class Cat(Protocol):
    async def cat(self, cid: str) -> bytes: ...


class Sources:
    """Fetches, checks and decodes sources; keeps the last few decoded by audioHash."""

    def __init__(self, kubo: Cat | None) -> None:
        self._kubo = kubo
        self._cache: OrderedDict[str, SourceAudio] = OrderedDict()

    async def load(self, source: EditSource) -> SourceAudio:
        if (found := self._cache.get(source.audio_hash)) is not None:
            self._cache.move_to_end(source.audio_hash)
            return found
        if self._kubo is None:
            raise SourceUnavailable("this generator has no IPFS node to fetch sources from")
        try:
            data = await self._kubo.cat(source.cid)
        except (KuboError, OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"IPFS did not give the source {source.cid}: {exc}") from exc
        decoded = decode_source(data, source)
        self._cache[source.audio_hash] = decoded
        while len(self._cache) > CACHED_SOURCES:
            self._cache.popitem(last=False)
        return decoded
