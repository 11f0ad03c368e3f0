"""Re-running a track from its generation manifest with the worker's own code (``acesteps
reproduce``), and saying how the result compares.

1. Settings from the manifest: the checkpoint (``tiny``, the hub id and revision, or a local
   directory the caller names), steps, shift, guidance, vocal language, VAE tiling, dtype,
   device type and the intra-op thread count; one job at a time (a batched worker's output is
   close to, not bit-equal with, a single run: the manifest says which mode made it).
2. The checkpoint loaded by `generator.model.load_pipeline`; a weights digest other than the
   manifest's ends it: CANNOT TELL, naming both. So does a LoRA adapter (the manifest's
   ``adapter``) not given with ``--adapter``, or given with another sha256, and so does an
   edit's source (the manifest's ``request.edit_source``: fetched by its CID, or the file
   given with ``--source``) whose keccak256 is not the recorded audioHash or whose decoded
   length is not the recorded ``edit.source_frames``.
3. The job rebuilt from the manifest, the text checked against what the pipeline tokenized
   then, the model run, the file encoded: `generator.model`, `generator.audio`, the code the
   worker runs.
   An MP3 is encoded by the encoder the manifest names (``output.file.encoder``; none named:
   libsndfile's, which made every MP3 before the field).
4. REPRODUCED when the PCM and the file hash the same; DIFFERENT with the first stage that
   differs (``pcm``: the model's output; ``file``: resampling or encoding) and what differs
   in the environment (versions, device class, threads). An encoder this install cannot run
   (another lameenc or libsndfile version) leaves the file unchecked: DIFFERENT at ``pcm``
   if the PCM differs already, otherwise CANNOT TELL, naming the manifest's encoder and
   this install's (the PCM is checked first: it is what the model made, and it says whether
   installing that encoder is worth it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from acesteps.hashing import keccak256_hex
from acesteps.manifest import Manifest
from acesteps.settings import ConfigError
from acesteps.types import AudioFormat
from generator import audio, editing
from generator.editing import Edit, SourceMismatch, SourceUnreadable, TaskUnsupported, decode_source
from generator.errors import ModelUnavailable
from generator.jobs import Adapter, Job
from generator.model import Model, load_pipeline
from generator.pipeline import pcm_keccak256
from generator.presets import PresetUnavailable, adapter_file, file_digest
from generator.provenance import environment
from generator.settings import GeneratorSettings

__all__ = ["Outcome", "reproduce"]

Verdict = Literal["REPRODUCED", "DIFFERENT", "CANNOT TELL"]
EXIT = {"REPRODUCED": 0, "DIFFERENT": 1, "CANNOT TELL": 2}


@dataclass
class Outcome:
    status: Verdict
    reason: str
    stage: Literal["pcm", "file"] | None = None
    expected_pcm: str | None = None
    got_pcm: str | None = None
    expected_file: str | None = None
    got_file: str | None = None
    environment: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What differs from the manifest's run: name -> {"manifest": ..., "here": ...}."""
    seconds: float | None = None

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]


def settings_for(
    manifest: Manifest, base: GeneratorSettings, model: str | None
) -> GeneratorSettings:
    """``base`` with everything the manifest fixes; ``model`` names a local checkpoint."""
    source = model or manifest.model.source
    if model is None and manifest.model.source not in ("tiny",) and "/" not in source:
        raise ModelUnavailable(
            f"the track was made with a local checkpoint named {source!r}: give its directory "
            "with --model DIR (its weights digest is checked)"
        )
    sampling, device = manifest.sampling, manifest.environment.device
    return base.with_overrides(
        # The one model the manifest names, whatever this host serves (ACESTEPS_MODELS).
        models=None,
        model_default=manifest.model.name,
        generator_model=source,
        generator_model_revision=manifest.model.revision if model is None else None,
        generator_steps=sampling.steps,
        generator_shift=sampling.shift,
        generator_guidance_scale=sampling.guidance_scale,
        generator_vocal_language=sampling.vocal_language,
        # Tiling depends on the clip alone: the same decision as the manifest's run.
        generator_vae_tiling_above_s=0.0 if sampling.vae_tiling else 1e9,
        # One job, run with the kernels the track was made with: the invariant mode's, or
        # torch's own (a batched track's single run is the nearest there is).
        generator_batch_mode="invariant" if sampling.batch_mode == "invariant" else "sequential",
        generator_dtype=manifest.model.dtype,
        generator_device=device.type if device.type != "mps" else "cpu",
        generator_torch_threads=device.threads,
    )


def _adapter(manifest: Manifest, given: str | None) -> Adapter | str | None:
    """The manifest's adapter from the file given, or why it cannot be used (a string)."""
    part = manifest.adapter
    if part is None:
        return None
    if given is None:
        return (
            f"the track was made with preset {part.preset!r}'s LoRA adapter {part.file} "
            f"({part.digest}): give that file with --adapter FILE"
        )
    try:
        file = adapter_file(Path(given).expanduser())
        digest = file_digest(file)
    except (OSError, PresetUnavailable) as exc:
        return f"cannot read the adapter: {exc}"
    if digest != part.digest:
        return f"another adapter: the manifest's is {part.digest}, {file.name} is {digest}"
    return Adapter(preset=part.preset, path=str(file), scale=part.scale, digest=digest)


def _edit(manifest: Manifest, source: bytes | None) -> Edit | str | None:
    """The manifest's edit with its source decoded, or why it cannot be run (a string)."""
    origin, part = manifest.request.edit_source, manifest.edit
    if origin is None or part is None:
        return None
    if source is None:
        return (
            f"the track edits {origin.kind} {origin.cid} ({origin.audio_hash}): give its "
            "file with --source FILE, or reach an IPFS node that has it"
        )
    try:
        decoded = decode_source(source, origin)
    except (SourceMismatch, SourceUnreadable) as exc:
        return f"cannot use the source: {exc}"
    if decoded.frames != part.source_frames:
        return (
            f"the source decodes to {decoded.frames} frames here, {part.source_frames} in the "
            "manifest (another decoder?)"
        )
    return Edit.of_part(part, decoded)


def reproduce(
    manifest: Manifest,
    base: GeneratorSettings,
    model: str | None = None,
    adapter: str | None = None,
    source: bytes | None = None,
) -> Outcome:
    """Re-run ``manifest``; ``source``: the bytes of the track or upload an edit edits."""
    started = time.perf_counter()
    lora = _adapter(manifest, adapter)
    if isinstance(lora, str):
        return Outcome("CANNOT TELL", lora)
    edit = _edit(manifest, source)
    if isinstance(edit, str):
        return Outcome("CANNOT TELL", edit)
    # 1-2. The checkpoint the manifest names, and nothing else.
    try:
        loaded = load_pipeline(settings_for(manifest, base, model))
    except (ModelUnavailable, ConfigError, ValueError) as exc:
        return Outcome("CANNOT TELL", f"cannot load the model: {exc}")
    if loaded.checkpoint.weights_digest != manifest.model.weights_digest:
        return Outcome(
            "CANNOT TELL",
            f"other weights: the manifest's checkpoint is {manifest.model.weights_digest}, "
            f"this one ({loaded.checkpoint.path}) is {loaded.checkpoint.weights_digest}",
        )
    # 3. The same job through the same code.
    job = Job(
        caption=manifest.job.caption,
        lyrics=manifest.job.lyrics,
        duration_s=manifest.job.duration_s,
        seed=manifest.job.seed,
        conditioning=tuple(sorted(manifest.job.conditioning.items())),
        model=loaded.name,
        adapter=lora,
        edit=edit,
    )
    try:
        (raw,) = loaded.generate([job])
    except TaskUnsupported as exc:
        return Outcome("CANNOT TELL", str(exc))
    file = manifest.output.file
    encoder, unavailable = _encoder(file.format, file.encoder)
    splice = editing.splicer(edit)
    data = None if unavailable else audio.encode(raw, job.duration_s, file.format, encoder, splice)
    outcome = Outcome(
        "REPRODUCED",
        "the model's PCM and the file are identical to the manifest's",
        expected_pcm=manifest.output.pcm.keccak256,
        got_pcm=pcm_keccak256(raw),
        expected_file=file.audio_hash,
        got_file=None if data is None else keccak256_hex(data),
        environment=_differences(manifest, loaded),
        seconds=round(time.perf_counter() - started, 3),
    )
    # 4. The first stage that differs.
    text = _text_difference(manifest, loaded, job)
    if outcome.got_pcm != outcome.expected_pcm:
        outcome.status, outcome.stage = "DIFFERENT", "pcm"
        outcome.reason = "the model's PCM differs" + (f" ({text})" if text else "")
        if unavailable:
            outcome.reason += f"; the file was not encoded: {unavailable}"
    elif unavailable:
        outcome.status = "CANNOT TELL"
        outcome.reason = f"the model's PCM is identical to the manifest's, but {unavailable}"
    elif outcome.got_file != outcome.expected_file:
        outcome.status, outcome.stage = "DIFFERENT", "file"
        outcome.reason = "same PCM, but the file differs (resampling or encoding)"
    return outcome


def _encoder(fmt: AudioFormat, recorded: str | None) -> tuple[str | None, str | None]:
    """The encoder to re-encode with, and why it cannot be (None when it can)."""
    if fmt != "mp3":
        if recorded is None:
            return None, None
        return None, f"the {fmt} file was written by {recorded!r}, which this install does not know"
    name = audio.LEGACY_MP3_ENCODER if recorded is None else recorded
    try:
        return audio.file_encoder(fmt, name), None
    except audio.UnknownEncoder:
        return None, (
            f"the file was encoded by {name!r}, which this install cannot run (it has "
            f"{', '.join(sorted(audio.MP3_ENCODERS))}): install that encoder to compare the file"
        )


def _text_difference(manifest: Manifest, model: Model, job: Job) -> str | None:
    text, lyrics = model.formatted_inputs(job)
    if (text, lyrics) != (manifest.model_input.text, manifest.model_input.lyrics):
        return "the pipeline's text template differs"
    return None


def _differences(manifest: Manifest, model: Model) -> dict[str, dict[str, Any]]:
    ours = environment(model.device)
    theirs = manifest.environment
    found: dict[str, dict[str, Any]] = {}
    if ours.python != theirs.python:
        found["python"] = {"manifest": theirs.python, "here": ours.python}
    for name in sorted(set(theirs.packages) | set(ours.packages)):
        a, b = theirs.packages.get(name), ours.packages.get(name)
        if a != b:
            found[name] = {"manifest": a, "here": b}
    for name in ("type", "name", "capability", "isa", "threads"):
        a, b = getattr(theirs.device, name), getattr(ours.device, name)
        if a != b:
            found[f"device.{name}"] = {"manifest": a, "here": b}
    return found
