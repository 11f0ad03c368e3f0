"""Load ACE-Step 1.5 once per worker and turn `Job` batches into 48 kHz stereo audio.

`load_pipeline(settings)` resolves the model source (`generator.settings`), loads it with
``AceStepPipeline.from_pretrained(source, dtype=...)`` and returns a `Model`. The dtype is
always explicit: a checkpoint saved in bf16 and loaded without one comes up mixed (diffusers
parts fp32, the Qwen3 text encoder bf16) and fails with "expected m1 and m2 to have the same
dtype". (diffusers 0.42 spells the argument ``dtype``; ``torch_dtype`` is its deprecated
alias.) For a hub id the local Hugging Face cache is tried first, the hub second; when both
fail, `ModelUnavailable` says what to set and how to fetch the weights.

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
GPU, close to but not bit-identical with a single run. Each job always gets its own
``torch.Generator`` (on the CPU, so the initial noise is the same on every device), seeded
from its seed.

Also per job: VAE tiling for clips longer than ``generator_vae_tiling_above_s`` (tiled decoding
is not bit-identical to untiled, so the choice depends on the duration alone), guidance 1.0
for turbo checkpoints, and the duration given to the pipeline is the latent length in seconds,
so the text template (which names the duration in whole seconds) depends on the job alone.
CPU output also depends on the number of intra-op threads (``generator_torch_threads``).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from diffusers import AceStepPipeline

from acesteps.settings import CACHE_DIR
from generator.digest import weights_digest
from generator.errors import GenerationFailedError, ModelUnavailable, OutOfMemory
from generator.jobs import Conditioning, Job
from generator.settings import AUTO_MODEL, DEFAULT_MODEL_ID, TINY_MODEL, GeneratorSettings
from generator.tiny import TINY_VERSION, ensure_tiny

__all__ = [
    "OUTPUT_SAMPLE_RATE",
    "BatchKey",
    "Checkpoint",
    "Model",
    "load_pipeline",
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


def load_pipeline(settings: GeneratorSettings) -> Model:
    """Load the checkpoint named by the settings onto its device; once per worker."""
    started = time.perf_counter()
    # 1. Device, dtype and the knobs that make repeated runs bit-identical.
    device = resolve_device(settings.generator_device)
    dtype = resolve_dtype(settings.generator_dtype, device)
    if settings.generator_torch_threads is not None:
        torch.set_num_threads(settings.generator_torch_threads)
    if device.type == "cuda":
        # cuBLAS needs this before its first handle to be deterministic; cuDNN must not pick
        # algorithms by timing them (that choice can change between runs).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    # 2. Source: the tiny checkpoint (built if needed), a directory, or a hub id; ``auto``
    #    is the default hub id when it is in the local cache, else the tiny checkpoint.
    source = settings.generator_model
    if source == AUTO_MODEL:
        source = DEFAULT_MODEL_ID if _in_hub_cache(DEFAULT_MODEL_ID) else TINY_MODEL
        if source == TINY_MODEL:
            log.warning(
                "*** %s is not in the Hugging Face cache: using the TINY random-weight test "
                "checkpoint (its audio is noise). Set ACESTEPS_GENERATOR_MODEL to a local "
                "ACE-Step 1.5 directory or download the weights for real music. ***",
                DEFAULT_MODEL_ID,
            )
    revision = None
    if source == TINY_MODEL:
        path = ensure_tiny(settings.generator_tiny_dir)
        pipe = _from_directory(path, dtype)
        model_id = f"tiny-acestep-v{TINY_VERSION}"
    elif _looks_like_path(source):
        path = Path(source).expanduser()
        pipe = _from_directory(path, dtype)
        model_id = path.resolve().name
        source = model_id  # where it lives on this host says nothing to anyone else
    else:
        revision = settings.generator_model_revision
        pipe = _from_hub(source, revision, dtype)
        model_id = f"{source}@{revision}" if revision else source
        path = _hub_snapshot(source, revision)
    checkpoint = Checkpoint(
        source=source,
        revision=revision,
        path=path,
        weights_digest=weights_digest(path, CACHE_DIR / "models" / "digests.json"),
    )

    # 3. Place it, check that no component kept another dtype, silence the progress bars.
    pipe.to(device)
    _unify_dtype(pipe, dtype)
    pipe.set_progress_bar_config(disable=True)
    model = Model(
        pipe, settings, device=device, dtype=dtype, model_id=model_id, checkpoint=checkpoint
    )
    log.info(
        "loaded %s (%s) on %s (%s, turbo=%s, guidance=%s) in %.1f s",
        model_id,
        checkpoint.weights_digest,
        device,
        dtype,
        model.is_turbo,
        model.guidance_scale,
        time.perf_counter() - started,
    )
    return model


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """The local snapshot directory the hub checkpoint was loaded from."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


def _load_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    # Without accelerate, diffusers warns on every load that it cannot use low_cpu_mem_usage.
    low_mem = importlib.util.find_spec("accelerate") is not None
    return {"dtype": dtype, "low_cpu_mem_usage": low_mem}


def _from_directory(path: Path, dtype: torch.dtype) -> AceStepPipeline:
    if not (path / "model_index.json").is_file():
        raise ModelUnavailable(
            f"{path} is not a diffusers ACE-Step checkpoint (no model_index.json): point "
            "ACESTEPS_GENERATOR_MODEL at a directory made by `huggingface-cli download "
            "<hub id> --local-dir DIR`, at a hub id, or set it to 'tiny'"
        )
    try:
        pipe: AceStepPipeline = AceStepPipeline.from_pretrained(str(path), **_load_kwargs(dtype))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelUnavailable(f"cannot load the checkpoint in {path}: {exc}") from exc
    return pipe


def _from_hub(repo_id: str, revision: str | None, dtype: torch.dtype) -> AceStepPipeline:
    kwargs = _load_kwargs(dtype) | {"revision": revision}
    try:
        local: AceStepPipeline = AceStepPipeline.from_pretrained(
            repo_id, local_files_only=True, **kwargs
        )
        return local
    except (OSError, ValueError) as exc:  # not cached, or cached incompletely
        local_error = exc
    try:
        log.info("%s is not in the local Hugging Face cache; downloading it", repo_id)
        remote: AceStepPipeline = AceStepPipeline.from_pretrained(repo_id, **kwargs)
        return remote
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"cannot load {repo_id!r}: not in the local Hugging Face cache ({local_error}) and "
            f"not downloadable from the hub ({exc}). Either set ACESTEPS_GENERATOR_MODEL to a "
            f"local checkpoint directory (fetch one on a machine with hub access: "
            f"`huggingface-cli download {repo_id} --local-dir DIR`, then copy DIR here), "
            "or set ACESTEPS_GENERATOR_MODEL=tiny for the random-weight test checkpoint."
        ) from exc


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
    ) -> None:
        self.pipeline = pipeline
        self.checkpoint = checkpoint
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.model_id = model_id
        self.sample_rate = int(pipeline.sample_rate)
        if self.sample_rate != OUTPUT_SAMPLE_RATE:
            raise ModelUnavailable(f"checkpoint samples at {self.sample_rate} Hz, not 48000")
        self.latents_per_second = float(pipeline.latents_per_second)
        self.is_turbo = bool(pipeline.is_turbo) or "turbo" in settings.generator_model.lower()
        self.guidance_scale = _guidance(settings.generator_guidance_scale, self.is_turbo)
        self.max_text_tokens = MAX_TEXT_TOKENS
        self.max_lyric_tokens = MAX_LYRIC_TOKENS
        self._lock = threading.Lock()

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
            vocal_language=self.settings.generator_vocal_language,
            audio_duration=self.pipeline_duration(self.latent_frames(job.duration_s)),
            # What __call__ derives for text2music when no instruction is given.
            instruction=self.pipeline._get_task_instruction(task_type="text2music"),
            **self._template_args(job),
        )
        return str(text), str(lyrics)

    def _template_args(self, job: Job) -> dict[str, object]:
        """The job's conditioning that the text template takes too (bpm, key, ...)."""
        accepted = inspect.signature(self.pipeline._format_prompt).parameters
        return {name: value for name, value in job.conditioning if name in accepted}

    def token_lengths(self, job: Job) -> tuple[int, int]:
        """Untruncated token counts of the formatted caption and lyrics."""
        text, lyrics = self.formatted_inputs(job)
        tokenize = self.pipeline.tokenizer
        return len(tokenize(text).input_ids), len(tokenize(lyrics).input_ids)

    def batch_key(self, job: Job) -> BatchKey:
        """Jobs with equal keys have equal shapes throughout the pipeline: no padding."""
        text_tokens, lyric_tokens = self.token_lengths(job)
        return BatchKey(
            latent_frames=self.latent_frames(job.duration_s),
            text_tokens=min(text_tokens, self.max_text_tokens),
            lyric_tokens=min(lyric_tokens, self.max_lyric_tokens),
            conditioning=job.conditioning,
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
            for group in self.plan(jobs):
                audios = self._run([jobs[i] for i in group], on_step)
                for i, audio in zip(group, audios, strict=True):
                    results[i] = audio
        return [results[i] for i in range(len(jobs))]

    def _step_callback(self, on_step: OnStep | None) -> Callable[..., Any] | None:
        if on_step is None:
            return None
        total = self.settings.generator_steps

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
        (n_frames,) = frames
        duration = self.pipeline_duration(n_frames)
        # 1. Tiling depends on the clip length only, never on the batch.
        if duration > self.settings.generator_vae_tiling_above_s:
            self.pipeline.vae.enable_tiling()
        else:
            self.pipeline.vae.disable_tiling()
        # 2. One CPU generator per job: its noise is drawn from its own seed alone.
        generators = [torch.Generator(device="cpu").manual_seed(j.seed) for j in jobs]
        try:
            output = self.pipeline(
                prompt=[j.caption for j in jobs],
                lyrics=[j.lyrics for j in jobs],  # a list as long as the prompts
                vocal_language=[self.settings.generator_vocal_language] * len(jobs),
                audio_duration=duration,
                num_inference_steps=self.settings.generator_steps,
                guidance_scale=self.guidance_scale,
                shift=self.settings.generator_shift,
                generator=generators,
                output_type="pt",
                return_dict=False,
                callback_on_step_end=self._step_callback(on_step),
                **dict(jobs[0].conditioning),
            )
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(f"{self.device} out of memory for {len(jobs)} job(s)") from exc
        audios: torch.Tensor = output[0]
        # 3. To the CPU as float32, cut or padded to the exact requested length.
        batch = audios.detach().to(device="cpu", dtype=torch.float32).numpy()
        return [_exact(batch[i], job.duration_s) for i, job in enumerate(jobs)]


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
