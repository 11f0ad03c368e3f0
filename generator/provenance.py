"""The generation manifest of a track (`acesteps.manifest`), as the worker that made it sees it.

Everything a re-run needs and everything that could make it differ: the request, the job and
the text exactly as the pipeline tokenized it, the sampling settings, the checkpoint and its
digest (`generator.digest`), the LoRA adapter of its preset and the sha256 of its file, the
package versions, the device class (GPU name and compute capability, or CPU model and the
instruction sets that change kernels) and the intra-op thread count, hashes of the
model's PCM and of the file, and the encoder of an MP3 (`Encoded.encoder`: the name of the
one that wrote it, `generator.audio.MP3_ENCODERS`). `acesteps reproduce` (through
`generator.reproduce`) compares the same fields of its own run.
"""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

import soundfile
import torch

from acesteps.manifest import (
    AdapterPart,
    DevicePart,
    EnvironmentPart,
    FilePart,
    JobPart,
    Manifest,
    ModelInputPart,
    ModelPart,
    OutputPart,
    PcmPart,
    RequestPart,
    SamplingPart,
)
from acesteps.messages import GenerationRequest
from acesteps.options import GenerationOptions
from generator import audio
from generator.jobs import Job
from generator.model import OUTPUT_SAMPLE_RATE, Model
from generator.pipeline import Encoded

__all__ = ["build_manifest", "environment"]

PACKAGES: Final = (
    "torch",
    "diffusers",
    "transformers",
    "tokenizers",
    "numpy",
    "soxr",
    "soundfile",
    "safetensors",
    "lameenc",  # the MP3 encoder (its version is also in the file's encoder name)
    "peft",  # applies a preset's LoRA adapter
)
# CPU instruction sets that select different kernels (and so may change float results).
ISA: Final = frozenset(
    {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16",
     "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile", "neon", "asimd", "sve"}
)  # fmt: skip


def build_manifest(
    request: GenerationRequest, job: Job, model: Model, encoded: Encoded
) -> Manifest:
    settings = model.settings
    frames = model.latent_frames(job.duration_s)
    pipeline_duration = model.pipeline_duration(frames)
    text, lyrics = model.formatted_inputs(job)
    text_tokens, lyric_tokens = model.token_lengths(job)
    return Manifest(
        request=RequestPart(
            request_id=request.request_id,
            source=request.source,
            chain=request.chain,
            offchain_id=request.offchain_id,
            options=GenerationOptions(**request.options()),
            parent_id=request.parent_id,
            variation=request.variation,
            edit_source=request.edit_source,
        ),
        job=JobPart(
            caption=job.caption,
            lyrics=job.lyrics,
            duration_s=job.duration_s,
            seed=job.seed,
            conditioning=dict(job.conditioning),
        ),
        model_input=ModelInputPart(
            text=text,
            lyrics=lyrics,
            text_tokens=text_tokens,
            lyric_tokens=lyric_tokens,
            pipeline_duration_s=pipeline_duration,
            latent_frames=frames,
        ),
        sampling=SamplingPart(
            steps=model.steps,
            shift=model.shift,
            guidance_scale=model.guidance_scale,
            vocal_language=model.vocal_language(job),
            batch_mode=settings.generator_batch_mode,
            batch_size=encoded.batch_size,
            vae_tiling=pipeline_duration > settings.generator_vae_tiling_above_s,
        ),
        model=ModelPart(
            name=model.name,
            id=model.model_id,
            source=model.checkpoint.source,
            revision=model.checkpoint.revision,
            weights_digest=model.checkpoint.weights_digest,
            dtype=str(model.dtype).removeprefix("torch."),
        ),
        adapter=_adapter(job),
        edit=None if job.edit is None else job.edit.part(),
        environment=environment(model.device),
        output=OutputPart(
            pcm=PcmPart(
                sample_rate=OUTPUT_SAMPLE_RATE,
                channels=2,
                frames=encoded.pcm_frames,
                keccak256=encoded.pcm_keccak256,
            ),
            file=FilePart(
                format=request.format,
                sample_rate=audio.SAMPLE_RATE,
                channels=2,
                duration_s=job.duration_s,
                size_bytes=len(encoded.data),
                audio_hash=encoded.audio_hash,
                cid=encoded.cid,
                encoder=encoded.encoder,
            ),
        ),
    )


def _adapter(job: Job) -> AdapterPart | None:
    if job.adapter is None:
        return None
    return AdapterPart(
        preset=job.adapter.preset,
        file=Path(job.adapter.path).name,
        scale=job.adapter.scale,
        digest=job.adapter.digest,
    )


def environment(device: torch.device) -> EnvironmentPart:
    """The software and the device class a generation ran with (threads read now)."""
    return EnvironmentPart(
        python=platform.python_version(),
        packages=_packages(),
        device=_device(device).model_copy(update={"threads": torch.get_num_threads()}),
    )


@cache
def _packages() -> dict[str, str]:
    found = {name: _version(name) for name in PACKAGES}
    found["libsndfile"] = str(soundfile.__libsndfile_version__)
    if torch.version.cuda:
        found["cuda"] = str(torch.version.cuda)
        found["cudnn"] = str(torch.backends.cudnn.version())  # type: ignore[no-untyped-call]
        found["triton"] = _version("triton")  # the invariant mode's CUDA kernels
    return found


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


@cache
def _device(device: torch.device) -> DevicePart:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return DevicePart(
            type="cuda",
            name=torch.cuda.get_device_name(index),
            capability=f"{major}.{minor}",
            threads=torch.get_num_threads(),
        )
    name, flags = _cpu()
    return DevicePart(
        type="mps" if device.type == "mps" else "cpu",
        name=name,
        isa=tuple(sorted(ISA & flags)),
        threads=torch.get_num_threads(),
    )


def _cpu() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags (Linux: /proc/cpuinfo; elsewhere what platform says)."""
    info: dict[str, Any] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or info.get("Model") or platform.processor() or "unknown"
    flags = info.get("flags") or info.get("Features") or ""
    return str(name), frozenset(str(flags).split())
