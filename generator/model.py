"""Load ACE-Step 1.5 once per worker and turn `Job` batches into 48 kHz stereo audio.

`load_pipeline(settings, served)` finds the served model's checkpoint (`locate`), loads it
with ``AceStepPipeline.from_pretrained(directory, dtype=...)`` and returns a `Model`. The dtype
is always explicit: a checkpoint saved in bf16 and loaded without one comes up mixed (diffusers
parts fp32, the Qwen3 text encoder bf16) and fails with "expected m1 and m2 to have the same
dtype". (diffusers 0.42 spells the argument ``dtype``; ``torch_dtype`` is its deprecated
alias.) Where a source's files come from (`locate`):

- ``tiny``: built by code (`generator.tiny`);
- a directory: itself; one made by ``acesteps models pull`` (its pull record says so) is the
  hub checkpoint it was pulled from, so manifests name the hub id and commit;
- a hub id: the copy pulled into ``ACESTEPS_MODELS_DIR``, else the Hugging Face cache, else
  a pull now (`generator.hub`: size announced, disk space checked, each file checked against
  the hub's hash); when the hub is unreachable, `ModelUnavailable` says how to bring the
  weights over from a connected machine;
- ``auto``: the default hub id when it is here; else, with CUDA, pulled on first use; else
  (no CUDA, or no hub) the tiny checkpoint, with a banner saying how to get real music.

A served model that pins a weights digest (``digest`` in ``ACESTEPS_MODELS``) is refused
when its files have another one.

`Model.generate(jobs)` returns one float32 array ``[2, round(duration * 48000)]`` per job.
How a request becomes a `Job` (caption, lyrics, seed) is documented in `generator.jobs`.

**A track's bytes depend only on its own request**, never on its batch. Measured on CPU
(fp32, the tiny checkpoint): items whose caption or lyric token lengths differ from the rest
of their batch come out up to 0.12 apart in latent space, because the DiT's cross-attention
gets no padding mask; even equal-length items differ from their single run by ~5e-7 (the
first linear layer of the timestep embedding takes a GEMV path for one row and a GEMM path
for several; batches of 2, 4 and 8 happened to agree bitwise, 3 did not). Float noise of that
size still changes MP3 and often WAV bytes. So in the default ``sequential`` batch mode every
job runs alone (batch size 1) inside `generate`, under one lock: bit-identical to a single
run by construction. The ``batched`` mode groups jobs by `batch_key` (latent frames and the
token lengths of caption and lyrics, computed with the pipeline's own tokenizer and text
template), so no padding ever enters a batch, and runs each group in one call: faster on a
GPU, close to but not bit-identical with a single run. The ``invariant`` mode groups jobs
by latent length alone and runs each group with batch-invariant kernels and masked prompt
padding (`generator.invariant`): every job gets exactly its single run's bytes in that mode
(which differ from the sequential mode's: other kernels). Each job always gets its own
``torch.Generator`` (on the CPU, so the initial noise is the same on every device), seeded
from its seed.

Also per job: VAE tiling for clips longer than ``generator_vae_tiling_above_s`` (tiled decoding
is not bit-identical to untiled, so the choice depends on the duration alone), guidance 1.0
for turbo checkpoints, and the duration given to the pipeline is the latent length in seconds,
so the text template (which names the duration in whole seconds) depends on the job alone.
CPU output also depends on the number of intra-op threads (``generator_torch_threads``).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import inspect
import json
import logging
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from diffusers import AceStepPipeline

from acesteps.models import DEFAULT_NAME, TASKS, ModelSpec, ServedModel
from acesteps.settings import CACHE_DIR
from generator import hub
from generator.digest import weights_digest
from generator.editcall import edit_arguments, source_noise
from generator.editing import Edit, TaskUnsupported
from generator.errors import GenerationFailedError, ModelUnavailable, OutOfMemory
from generator.invariant.masks import padding_masks
from generator.invariant.mode import InvariantMode, UncoveredOp
from generator.jobs import Adapter, Conditioning, Job
from generator.presets import PresetUnavailable, file_digest, has_peft
from generator.settings import AUTO_MODEL, DEFAULT_MODEL_ID, TINY_MODEL, GeneratorSettings
from generator.tiny import TINY_VERSION, ensure_tiny

__all__ = [
    "CPU_SPEED",
    "OUTPUT_SAMPLE_RATE",
    "BatchKey",
    "Checkpoint",
    "Located",
    "Model",
    "estimate_bytes",
    "load_located",
    "load_pipeline",
    "locate",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

OUTPUT_SAMPLE_RATE: Final = 48_000
MAX_TEXT_TOKENS: Final = 256  # AceStepPipeline.__call__ max_text_length default
MAX_LYRIC_TOKENS: Final = 2048  # AceStepPipeline.__call__ max_lyric_length default

Audio = npt.NDArray[np.float32]
OnStep = Callable[[int, int], None]
"""Called with (steps done, steps in all) after each denoising step."""


@dataclass(frozen=True)
class Checkpoint:
    """Which files were loaded: for the generation manifest and ``acesteps reproduce``."""

    source: str
    """``tiny``, the hub id, or the name of the local directory."""
    revision: str | None
    path: Path
    weights_digest: str


class BatchKey(NamedTuple):
    """Jobs may share a pipeline call only when these are equal (no padding, one length, the
    same per-call arguments)."""

    latent_frames: int
    text_tokens: int
    lyric_tokens: int
    conditioning: Conditioning = ()
    model: str = DEFAULT_NAME
    adapter: Adapter | None = None
    edit: Edit | None = None


# ------------------------------------------------------------------ resolution


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("ACESTEPS_GENERATOR_DEVICE=cuda but torch sees no CUDA device")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype: torch.dtype = getattr(torch, setting)
    return dtype


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or os.path.isdir(os.path.expanduser(source))


# ------------------------------------------------------------------ loading


@dataclass(frozen=True)
class Located:
    """Where a served model's files are, and what the manifest calls them."""

    path: Path
    source: str
    revision: str | None
    model_id: str


def load_pipeline(settings: GeneratorSettings, served: ServedModel | None = None) -> Model:
    """Load a served model (default: the operator's default) onto its device."""
    served = served or settings.served().resolve(None)
    device = _prepare_device(settings)
    return load_located(settings, served, locate(settings, served, device), device)


def _prepare_device(settings: GeneratorSettings) -> torch.device:
    """The device, and the knobs that make repeated runs bit-identical."""
    device = resolve_device(settings.generator_device)
    if settings.generator_torch_threads is not None:
        torch.set_num_threads(settings.generator_torch_threads)
    if device.type == "cuda":
        # cuBLAS needs this before its first handle to be deterministic; cuDNN must not pick
        # algorithms by timing them (that choice can change between runs).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def _spec(settings: GeneratorSettings, served: ServedModel) -> ModelSpec:
    return served.spec or settings.single_model()


def locate(settings: GeneratorSettings, served: ServedModel, device: torch.device) -> Located:
    """The checkpoint's directory, fetched first when it must be (see the module docstring)."""
    spec = _spec(settings, served)
    source = spec.source
    if source == AUTO_MODEL:
        return _auto(settings, device)
    if source == TINY_MODEL:
        path = ensure_tiny(settings.generator_tiny_dir)
        return Located(path, TINY_MODEL, None, f"tiny-acestep-v{TINY_VERSION}")
    if _looks_like_path(source):
        path = Path(source).expanduser().resolve()
        record = hub.pulled_record(path)
        if record is not None:  # a pulled hub checkpoint, copied here
            return _hub_located(path, record["repo_id"], None)
        # Where it lives on this host says nothing to anyone else: the directory's name.
        return Located(path, path.name, None, path.name)
    return _from_hub(settings, source, spec.revision)


def _hub_located(path: Path, repo_id: str, revision: str | None) -> Located:
    """A hub checkpoint at ``path``: its id as configured (``repo@revision``), and in the
    manifest the commit its files are, when known (so a re-run fetches exactly those)."""
    record = hub.pulled_record(path)
    commit = record["commit"] if record else None
    if commit is None and re.fullmatch(r"[0-9a-f]{40}", path.name):  # a Hugging Face snapshot
        commit = path.name
    model_id = f"{repo_id}@{revision}" if revision else repo_id
    return Located(path, repo_id, commit or revision, model_id)


def _from_hub(settings: GeneratorSettings, repo_id: str, revision: str | None) -> Located:
    path = hub.local_copy(settings.models_dir, repo_id, revision)
    if path is None:
        log.info("%s is not here: pulling it from the hub", repo_id)
        path = _pull(settings, repo_id, revision)
    return _hub_located(path, repo_id, revision)


def _pull(settings: GeneratorSettings, repo_id: str, revision: str | None) -> Path:
    dest = hub.pulled_dir(settings.models_dir, repo_id, revision)
    try:
        return hub.pull(repo_id, dest, revision=revision, say=log.warning)
    except hub.HubUnreachable as exc:
        raise ModelUnavailable(
            f"cannot load {repo_id!r}: it is not here and the hub is unreachable ({exc}). On "
            f"a machine with hub access run `acesteps models pull {repo_id} --local-dir DIR`, "
            "copy DIR here and set ACESTEPS_GENERATOR_MODEL (or the model's source in "
            "ACESTEPS_MODELS) to it; or set it to 'tiny' for the random-weight test checkpoint"
        ) from exc


CPU_SPEED: Final = (
    "measured with the smaller non-XL turbo at real size (random weights, fp32, 8 steps): "
    "22.6 s for a 5 s clip on a 2-core x86 server CPU, about 0.2x real time "
    "(bench/models.py --real-size); the XL default is larger and was not measured on a CPU"
)
"""What a CPU can expect of the real model (docs/benchmarks.md, 2026-11-29)."""


def _auto(settings: GeneratorSettings, device: torch.device) -> Located:
    """``auto``: the default hub id when here; pulled on first use with CUDA; else tiny."""
    path = hub.local_copy(settings.models_dir, DEFAULT_MODEL_ID, None)
    if path is not None:
        return _hub_located(path, DEFAULT_MODEL_ID, None)
    if device.type == "cuda":
        try:
            return _hub_located(
                hub.pull(
                    DEFAULT_MODEL_ID,
                    hub.pulled_dir(settings.models_dir, DEFAULT_MODEL_ID),
                    say=log.warning,
                ),
                DEFAULT_MODEL_ID,
                None,
            )
        except hub.HubUnreachable as exc:
            _banner(
                f"{DEFAULT_MODEL_ID} is not here and the hub is unreachable ({exc}).",
                "To bring it over: on a machine with hub access run",
                f"  acesteps models pull {DEFAULT_MODEL_ID} --local-dir DIR",
                "copy DIR to this machine and set ACESTEPS_GENERATOR_MODEL=DIR.",
            )
    else:
        _banner(*_cpu_advice())
    path = ensure_tiny(settings.generator_tiny_dir)
    return Located(path, TINY_MODEL, None, f"tiny-acestep-v{TINY_VERSION}")


def _cpu_advice() -> list[str]:
    try:
        remote = hub.remote_checkpoint(DEFAULT_MODEL_ID, timeout_s=5.0)
        size = f"{hub.human(remote.total_bytes)} (the hub's file sizes)"
    except ModelUnavailable as exc:
        size = f"size unknown: the hub did not answer ({exc})"
    return [
        "No CUDA device: using the TINY random-weight test checkpoint; its audio is noise.",
        f"For real music, ACE-Step 1.5 ({DEFAULT_MODEL_ID}, {size}):",
        "  on a machine with an NVIDIA GPU, ACESTEPS_GENERATOR_MODEL=auto downloads it on the",
        f"  first start; or fetch it first: acesteps models pull {DEFAULT_MODEL_ID}",
        f"  (then ACESTEPS_GENERATOR_MODEL={DEFAULT_MODEL_ID}; --local-dir DIR for a copy to",
        "  carry to an offline machine, then ACESTEPS_GENERATOR_MODEL=DIR).",
        f"  On a CPU it runs, slowly: {CPU_SPEED}.",
    ]


def _banner(*lines: str) -> None:
    bar = "*" * 78
    log.warning("\n%s\n%s\n%s", bar, "\n".join(f"* {line}" for line in lines), bar)


def estimate_bytes(path: Path, dtype: torch.dtype) -> int:
    """The bytes the checkpoint's weights take once loaded in ``dtype``, from the safetensors
    headers (floating-point tensors in ``dtype``, the others as stored); 0 when unknown."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1}  # fmt: skip
    total = 0
    for file in sorted(path.rglob("*.safetensors")):
        if any(part.startswith(".") for part in file.relative_to(path).parts):
            continue
        try:
            with file.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(tensor["shape"])
            kind = tensor["dtype"]
            total += count * (itemsize if kind.startswith(("F", "BF")) else sizes.get(kind, 4))
    return total


def load_located(
    settings: GeneratorSettings, served: ServedModel, located: Located, device: torch.device
) -> Model:
    """Load ``located`` for ``served`` onto ``device``."""
    started = time.perf_counter()
    spec = _spec(settings, served)
    dtype = resolve_dtype(settings.generator_dtype, device)
    checkpoint = Checkpoint(
        source=located.source,
        revision=located.revision,
        path=located.path,
        weights_digest=weights_digest(located.path, CACHE_DIR / "models" / "digests.json"),
    )
    if spec.digest is not None and checkpoint.weights_digest != spec.digest:
        raise ModelUnavailable(
            f"model {served.name!r}: the weights in {located.path} have digest "
            f"{checkpoint.weights_digest}, but ACESTEPS_MODELS pins {spec.digest}: "
            "refusing to serve other weights"
        )
    pipe = _from_directory(located.path, dtype)
    # Place it, check that no component kept another dtype, silence the progress bars.
    pipe.to(device)
    _unify_dtype(pipe, dtype)
    pipe.set_progress_bar_config(disable=True)
    model = Model(
        pipe,
        settings,
        device=device,
        dtype=dtype,
        model_id=located.model_id,
        checkpoint=checkpoint,
        spec=spec,
        name=served.name,
    )
    if settings.generator_batch_mode == "invariant":
        _warm_invariant(model)
    model.load_s = time.perf_counter() - started
    log.info(
        "loaded model %r: %s (%s) on %s (%s, turbo=%s, guidance=%s, %s) in %.1f s",
        served.name,
        located.model_id,
        checkpoint.weights_digest,
        device,
        dtype,
        model.is_turbo,
        model.guidance_scale,
        hub.human(model.memory_bytes()),
        model.load_s,
    )
    return model


def _warm_invariant(model: Model) -> None:
    """The invariant mode refuses an op it has no kernel for: find out at load, not on a
    user's job. One short call of two prompts of other lengths (padding included); on CUDA it
    also compiles the Triton kernels before the first request."""
    jobs = [
        Job("warm up", "[Instrumental]", 1.0, 0),
        Job("warm up the batch-invariant kernels once, at load", "[verse]\nla la", 1.0, 1),
    ]
    try:
        model.generate(jobs)
    except GenerationFailedError as exc:
        raise ModelUnavailable(
            f"model {model.name!r} ({model.model_id}) cannot run in the invariant batch mode: {exc}"
        ) from exc


def _load_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    # Without accelerate, diffusers warns on every load that it cannot use low_cpu_mem_usage.
    low_mem = importlib.util.find_spec("accelerate") is not None
    return {"dtype": dtype, "low_cpu_mem_usage": low_mem}


def _from_directory(path: Path, dtype: torch.dtype) -> AceStepPipeline:
    if not (path / "model_index.json").is_file():
        raise ModelUnavailable(
            f"{path} is not a diffusers ACE-Step checkpoint (no model_index.json): point "
            "ACESTEPS_GENERATOR_MODEL (or the model's source in ACESTEPS_MODELS) at a "
            "directory made by `acesteps models pull <hub id> --local-dir DIR`, at a hub id, "
            "or set it to 'tiny'"
        )
    try:
        pipe: AceStepPipeline = AceStepPipeline.from_pretrained(str(path), **_load_kwargs(dtype))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelUnavailable(f"cannot load the checkpoint in {path}: {exc}") from exc
    return pipe


def _unify_dtype(pipe: AceStepPipeline, dtype: torch.dtype) -> None:
    """Cast any component whose floating-point weights are not ``dtype`` (and say so)."""
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        found = {p.dtype for p in component.parameters() if p.is_floating_point()}
        if found - {dtype}:
            log.warning("casting %s from %s to %s", name, sorted(map(str, found)), dtype)
            component.to(dtype=dtype)


# ------------------------------------------------------------------ running


class Model:
    """A loaded pipeline and the settings it runs with. Thread-safe: one call at a time."""

    def __init__(
        self,
        pipeline: AceStepPipeline,
        settings: GeneratorSettings,
        *,
        device: torch.device,
        dtype: torch.dtype,
        model_id: str,
        checkpoint: Checkpoint,
        spec: ModelSpec | None = None,
        name: str = DEFAULT_NAME,
    ) -> None:
        self.pipeline = pipeline
        self.checkpoint = checkpoint
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.name = name
        """The served model's name (`acesteps.models`)."""
        self.spec = spec or settings.single_model()
        self.steps = self.spec.steps
        self.shift = self.spec.shift
        self.sample_rate = int(pipeline.sample_rate)
        if self.sample_rate != OUTPUT_SAMPLE_RATE:
            raise ModelUnavailable(f"checkpoint samples at {self.sample_rate} Hz, not 48000")
        self.latents_per_second = float(pipeline.latents_per_second)
        self.is_turbo = (
            bool(pipeline.is_turbo)
            or self.spec.variant == "turbo"
            or (self.spec.variant is None and "turbo" in self.spec.source.lower())
        )
        self.variant = self.spec.variant or ("turbo" if self.is_turbo else None)
        self.guidance_scale = _guidance(self.spec.guidance, self.is_turbo)
        self.max_text_tokens = MAX_TEXT_TOKENS
        self.max_lyric_tokens = MAX_LYRIC_TOKENS
        self.load_s: float | None = None
        self.released = False
        self._lock = threading.Lock()
        self._adapters: dict[str, str] = {}
        """Loaded LoRA adapters: digest -> the pipeline's adapter name."""

    def with_settings(self, settings: GeneratorSettings) -> Model:
        """This model run with other settings (another batch mode, say): the same pipeline,
        lock and loaded adapters, so never both at once on two threads."""
        other = copy.copy(self)
        other.settings = settings
        return other

    # -------------------------------------------------------------- memory

    def memory_bytes(self) -> int:
        """Bytes its weights take (parameters and buffers of every component)."""
        total = 0
        for component in self.pipeline.components.values():
            if isinstance(component, torch.nn.Module):
                tensors = [*component.parameters(), *component.buffers()]
                total += sum(t.numel() * t.element_size() for t in tensors)
        return total

    def release(self) -> None:
        """Drop the weights (evicted): the tokenizer and what the manifest needs stay, so a
        request already prepared with this model can still be described; `generate` cannot
        run any more."""
        with self._lock:
            for name, component in list(self.pipeline.components.items()):
                if isinstance(component, torch.nn.Module):
                    setattr(self.pipeline, name, None)
            self.released = True
            self._adapters.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -------------------------------------------------------------- shapes

    def latent_frames(self, duration_s: float) -> int:
        """Latent frames the pipeline generates for a duration (25 per second)."""
        return math.ceil(duration_s * self.latents_per_second)

    def pipeline_duration(self, frames: int) -> float:
        """The duration to pass so that the pipeline makes exactly ``frames`` frames.

        The pipeline recomputes ``ceil(duration * 25)``; frames / 25 can land a hair above
        an integer in floating point, so step down until it maps back.
        """
        duration = frames / self.latents_per_second
        while math.ceil(duration * self.latents_per_second) > frames:
            duration = math.nextafter(duration, 0.0)
        return duration

    def formatted_inputs(self, job: Job) -> tuple[str, str]:
        """The caption and lyric strings exactly as the pipeline will tokenize them."""
        text, lyrics = self.pipeline._format_prompt(
            prompt=job.caption,
            lyrics=job.lyrics,
            vocal_language=self.vocal_language(job),
            audio_duration=self.pipeline_duration(self.latent_frames(job.duration_s)),
            # What __call__ derives for the task when no instruction is given.
            instruction=self.pipeline._get_task_instruction(
                task_type=job.task, track_name=job.edit.stem if job.edit else None
            ),
            **self._template_args(job),
        )
        return str(text), str(lyrics)

    def _template_args(self, job: Job) -> dict[str, object]:
        """The job's conditioning that the text template takes too (bpm, key, ...)."""
        accepted = inspect.signature(self.pipeline._format_prompt).parameters
        return {
            name: value
            for name, value in job.conditioning
            if name in accepted and name != "vocal_language"
        }

    def vocal_language(self, job: Job) -> str:
        """The language of the job's lyrics: the request's, else the service's setting."""
        return str(
            dict(job.conditioning).get("vocal_language", self.settings.generator_vocal_language)
        )

    def token_lengths(self, job: Job) -> tuple[int, int]:
        """Untruncated token counts of the formatted caption and lyrics."""
        text, lyrics = self.formatted_inputs(job)
        tokenize = self.pipeline.tokenizer
        return len(tokenize(text).input_ids), len(tokenize(lyrics).input_ids)

    def batch_key(self, job: Job) -> BatchKey:
        """Jobs with equal keys may share a call. In the ``batched`` mode they have equal
        shapes throughout the pipeline (no padding); in the ``invariant`` mode captions and
        lyrics are padded with masks (`generator.invariant.masks`), so token lengths are no
        part of the key (0)."""
        if self.settings.generator_batch_mode == "invariant":
            text_tokens = lyric_tokens = 0
        else:
            text_tokens, lyric_tokens = self.token_lengths(job)
        return BatchKey(
            latent_frames=self.latent_frames(job.duration_s),
            text_tokens=min(text_tokens, self.max_text_tokens),
            lyric_tokens=min(lyric_tokens, self.max_lyric_tokens),
            conditioning=job.conditioning,
            model=job.model,
            adapter=job.adapter,
            edit=job.edit,
        )

    def check_task(self, task: str) -> None:
        """`TaskUnsupported` unless this checkpoint can run the pipeline task ``task``: turbo
        checkpoints were distilled for text2music, repaint and cover only (`TASKS`), and a
        cover needs the audio tokenizer and detokenizer, which not every checkpoint has."""
        variant = "turbo" if self.is_turbo else self.variant
        if variant is not None and task not in TASKS[variant]:
            raise TaskUnsupported(
                f"model {self.name!r} ({self.model_id}) is a {variant} checkpoint, which cannot "
                f"{task}: it runs {', '.join(TASKS[variant])}; serve a base or sft checkpoint "
                "for it"
            )
        if task == "cover" and (
            getattr(self.pipeline, "audio_tokenizer", None) is None
            or getattr(self.pipeline, "audio_token_detokenizer", None) is None
        ):
            raise TaskUnsupported(
                f"model {self.name!r} ({self.model_id}) cannot make covers: its checkpoint has "
                "no audio tokenizer and detokenizer"
            )

    def plan(self, jobs: Sequence[Job]) -> list[list[int]]:
        """Indices of ``jobs`` grouped into pipeline calls, per the batch mode."""
        if self.settings.generator_batch_mode == "sequential":
            return [[i] for i in range(len(jobs))]
        groups: dict[BatchKey, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(self.batch_key(job), []).append(i)
        size = self.settings.generator_max_batch
        return [g[s : s + size] for g in groups.values() for s in range(0, len(g), size)]

    # -------------------------------------------------------------- generation

    def generate(self, jobs: Sequence[Job], on_step: OnStep | None = None) -> list[Audio]:
        """One float32 ``[2, round(duration * 48000)]`` array per job, in order.

        Blocking; the worker calls it from a thread (``asyncio.to_thread``) so the consumer
        keeps its heartbeats. ``on_step(done, total)`` is called from that thread after each
        denoising step of each pipeline call (it must be quick; it may raise `Interrupted`,
        which stops the call and leaves this method). Raises `OutOfMemory` (retryable) or
        `GenerationFailedError`.
        """
        results: dict[int, Audio] = {}
        with self._lock:
            if self.released:
                raise ModelUnavailable(f"model {self.name!r} was evicted; load it again")
            for group in self.plan(jobs):
                audios = self._run([jobs[i] for i in group], on_step)
                for i, audio in zip(group, audios, strict=True):
                    results[i] = audio
        return [results[i] for i in range(len(jobs))]

    def _step_callback(self, on_step: OnStep | None) -> Callable[..., Any] | None:
        if on_step is None:
            return None
        total = self.steps

        def step_end(
            _pipe: object, step: int, _timestep: object, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            on_step(step + 1, total)
            return tensors  # the latents as they are: progress never changes the bytes

        return step_end

    def _run(self, jobs: list[Job], on_step: OnStep | None = None) -> list[Audio]:
        frames = {self.latent_frames(j.duration_s) for j in jobs}
        if len(frames) != 1:
            raise ValueError(f"one pipeline call needs one latent length, got {sorted(frames)}")
        if len({j.conditioning for j in jobs}) != 1:
            raise ValueError("one pipeline call needs one conditioning")
        if len({j.model for j in jobs}) != 1:
            raise ValueError("one pipeline call runs one model")
        if len({j.adapter for j in jobs}) != 1:
            raise ValueError("one pipeline call runs one adapter (or none)")
        if len({j.edit for j in jobs}) != 1:
            raise ValueError("one pipeline call runs one edit (or none)")
        (n_frames,) = frames
        self._use_adapter(jobs[0].adapter)
        duration = self.pipeline_duration(n_frames)
        # 1. Tiling depends on the clip length only, never on the batch.
        if duration > self.settings.generator_vae_tiling_above_s:
            self.pipeline.vae.enable_tiling()
        else:
            self.pipeline.vae.disable_tiling()
        # 2. One CPU generator per job: its noise is drawn from its own seed alone.
        generators = [torch.Generator(device="cpu").manual_seed(j.seed) for j in jobs]
        conditioning = dict(jobs[0].conditioning)
        conditioning.pop("vocal_language", None)  # per job, below
        edit = jobs[0].edit
        if edit is not None:
            self.check_task(edit.task)
            conditioning |= edit_arguments(edit, n_frames, self.latents_per_second)
        try:
            with source_noise(edit, self.device), self._kernels():
                output = self._call(jobs, duration, generators, on_step, conditioning)
        except UncoveredOp as exc:
            raise GenerationFailedError(str(exc)) from exc
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(f"{self.device} out of memory for {len(jobs)} job(s)") from exc
        audios: torch.Tensor = output[0]
        # 3. To the CPU as float32, cut or padded to the exact requested length.
        batch = audios.detach().to(device="cpu", dtype=torch.float32).numpy()
        return [_exact(batch[i], job.duration_s) for i, job in enumerate(jobs)]

    @contextmanager
    def _kernels(self) -> Iterator[None]:
        """The ``invariant`` mode's kernels and padding masks around a call; else nothing."""
        if self.settings.generator_batch_mode != "invariant":
            yield
            return
        with InvariantMode(self.device), padding_masks(self.pipeline):
            yield

    def _call(
        self,
        jobs: list[Job],
        duration: float,
        generators: list[torch.Generator],
        on_step: OnStep | None,
        arguments: dict[str, Any],
    ) -> Any:
        return self.pipeline(
            prompt=[j.caption for j in jobs],
            lyrics=[j.lyrics for j in jobs],  # a list as long as the prompts
            vocal_language=[self.vocal_language(j) for j in jobs],
            audio_duration=duration,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            shift=self.shift,
            generator=generators,
            output_type="pt",
            return_dict=False,
            callback_on_step_end=self._step_callback(on_step),
            **arguments,
        )

    # -------------------------------------------------------------- adapters

    def _use_adapter(self, adapter: Adapter | None) -> None:
        """Make ``adapter`` the one active LoRA (None: none). An adapter is loaded once, by
        its digest, after checking the file still has it; with every adapter disabled the
        DiT computes exactly what it did before any was loaded (tests/unit/test_presets.py),
        so jobs without a preset keep their bytes."""
        pipe = self.pipeline
        if adapter is None:
            if self._adapters:
                pipe.disable_lora()
            return
        name = self._adapters.get(adapter.digest) or self._load_adapter(adapter)
        pipe.enable_lora()
        pipe.set_adapters([name], [adapter.scale])

    def _load_adapter(self, adapter: Adapter) -> str:
        where = f"preset {adapter.preset!r}: the LoRA adapter {Path(adapter.path).name}"
        if not has_peft():
            raise PresetUnavailable(f"{where} needs the peft package (pip install peft)")
        try:
            digest = file_digest(Path(adapter.path))
        except OSError as exc:
            raise PresetUnavailable(f"{where} cannot be read: {exc.strerror}") from None
        if digest != adapter.digest:
            raise PresetUnavailable(f"{where} changed since it was checked: {digest}")
        name = f"preset_{adapter.digest.removeprefix('sha256:')[:16]}"
        path = Path(adapter.path)
        try:
            self.pipeline.load_lora_weights(
                str(path.parent), weight_name=path.name, adapter_name=name
            )
        except Exception as exc:  # diffusers/peft raise many kinds on a file that does not fit
            if name in _adapter_names(self.pipeline):  # half-loaded: take it out again
                self.pipeline.delete_adapters(name)
            raise PresetUnavailable(f"{where} does not load into this model: {exc}") from exc
        self._adapters[adapter.digest] = name
        log.info("loaded %s (%s) into model %r", where, adapter.digest, self.name)
        return name


def _adapter_names(pipe: AceStepPipeline) -> set[str]:
    try:
        return set(pipe.get_list_adapters().get("transformer", ()))
    except (ValueError, AttributeError):
        return set()


def _guidance(setting: float | None, is_turbo: bool) -> float:
    if is_turbo:
        if setting is not None and setting > 1.0:
            log.warning("guidance %.2f ignored: turbo checkpoints are guidance-distilled", setting)
        return 1.0
    return 7.0 if setting is None else setting


def _exact(audio: npt.NDArray[np.float32], duration_s: float) -> Audio:
    """``[2, round(duration * 48000)]``: the pipeline makes whole latent frames (1920 samples)."""
    if not np.isfinite(audio).all():
        raise GenerationFailedError("the model produced non-finite samples")
    wanted = round(duration_s * OUTPUT_SAMPLE_RATE)
    have = audio.shape[-1]
    if have >= wanted:
        out = audio[:, :wanted]
    else:
        out = np.pad(audio, ((0, 0), (0, wanted - have)))
    return np.ascontiguousarray(out, dtype=np.float32)
