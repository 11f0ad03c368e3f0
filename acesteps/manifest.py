"""The generation manifest: everything a track's bytes came from, hashed and registered on chain.

The generator writes one per track (`generator.provenance`): the request as given, what the
model was asked exactly (the job and the text as the pipeline tokenized it), the sampling
settings, the model and a digest of its files, the software and device it ran on, and hashes
of what came out (the model's float32 PCM before resampling, and the published file). Its
bytes are canonical JSON (RFC 8785, JSON Canonicalization Scheme), so that
``manifestHash = keccak256(bytes)`` is stable; the publisher pins those bytes to IPFS
(``manifestCid``) and registers both with the track (``provenanceOf``). ``acesteps
reproduce`` re-runs a track from it; ``acesteps verify`` checks it against the chain.

``schemas/Manifest.json`` is its JSON Schema; ``docs/provenance.md`` says what each field is
and what reproduction guarantees.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

from acesteps.editing import EditSource
from acesteps.hashing import keccak256_hex
from acesteps.options import GenerationOptions
from acesteps.origin import ChainOrigin
from acesteps.types import AudioFormat, Bytes32Hex, Cid, RequestId, Source

__all__ = ["MANIFEST_KIND", "Manifest", "canonical", "manifest_hash", "parse_manifest"]

MANIFEST_KIND: Final = "acesteps.generation-manifest"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RequestPart(_Part):
    request_id: RequestId
    source: Source
    chain: ChainOrigin | None = None
    offchain_id: Bytes32Hex | None = None
    options: GenerationOptions = Field(description="the request as its author gave it")
    parent_id: RequestId | None = Field(
        None,
        description="a variation: the request it is a variation of",
        exclude_if=lambda value: value is None,  # manifests of other requests keep their bytes
    )
    variation: int | None = Field(
        None,
        description="a variation: its index among its parent's",
        exclude_if=lambda value: value is None,
    )
    edit_source: EditSource | None = Field(
        None,
        description="an edit: the track or upload it edits (CID, audioHash, length)",
        exclude_if=lambda value: value is None,
    )


class JobPart(_Part):
    """What the model was asked: caption (prompt and tags), lyrics, length, seed."""

    caption: str
    lyrics: str
    duration_s: float
    seed: int = Field(ge=0)
    conditioning: dict[str, Any] = Field(
        default_factory=dict, description="more AceStepPipeline arguments (bpm, key, ...)"
    )


class ModelInputPart(_Part):
    """The text exactly as the pipeline tokenized it, and the shapes it ran with."""

    text: str
    lyrics: str
    text_tokens: int
    lyric_tokens: int
    pipeline_duration_s: float
    latent_frames: int


class SamplingPart(_Part):
    steps: int
    shift: float
    guidance_scale: float
    vocal_language: str
    batch_mode: Literal["sequential", "batched", "invariant"] = Field(
        description="invariant: made with the batch-invariant kernels, which a re-run must use too"
    )
    batch_size: int = Field(ge=1, description="jobs in the pipeline call that made this one")
    vae_tiling: bool


class ModelPart(_Part):
    name: str | None = Field(
        None,
        description="the served model the request ran on (acesteps.models); absent from "
        "manifests made before models were served by name",
        exclude_if=lambda value: value is None,  # so that those keep their canonical bytes
    )
    id: str = Field(description="what the worker calls the checkpoint")
    source: str = Field(description="'tiny', a hub id, or the name of a local directory")
    revision: str | None = None
    weights_digest: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="sha256 over every file of the checkpoint (generator.digest)",
    )
    dtype: str


class AdapterPart(_Part):
    """The LoRA adapter of the request's style preset (`acesteps.presets`)."""

    preset: str = Field(description="the preset's name")
    file: str = Field(description="the adapter file's name (where it lives says nothing)")
    scale: float = Field(ge=0, description="how strongly it applied")
    digest: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$", description="sha256: of the adapter file's bytes"
    )


class EditPart(_Part):
    """What the model was asked to do with an edit's source (`generator.editing`)."""

    task: Literal["repaint", "cover", "extract"] = Field(
        description="the pipeline's task: an extension is a repaint of the padded source"
    )
    source_frames: int = Field(ge=1, description="the source's frames at 44.1 kHz, as decoded")
    pad_before_s: float = Field(0, ge=0, description="silence put before the source")
    pad_after_s: float = Field(0, ge=0, description="silence put after the source")
    window_start_s: float | None = Field(
        None, description="repaint: where the regenerated window starts in the track"
    )
    window_end_s: float | None = Field(None, description="repaint: where it ends")
    cover_strength: float | None = None
    stem: str | None = Field(
        None, description="extract: the track it took out", exclude_if=lambda value: value is None
    )
    splice_fade_s: float | None = Field(
        None,
        description="repaint: outside the window the file has the source's samples; inside "
        "it, this long a crossfade at each edge that is not the track's start or end",
    )


class DevicePart(_Part):
    type: Literal["cpu", "cuda", "mps"]
    name: str
    capability: str | None = Field(None, description="CUDA compute capability")
    isa: tuple[str, ...] = Field((), description="CPU instruction sets that change kernels")
    threads: int = Field(ge=1, description="torch intra-op threads")


class EnvironmentPart(_Part):
    python: str
    packages: dict[str, str] = Field(description="torch, diffusers, transformers, ...")
    device: DevicePart


class PcmPart(_Part):
    sample_rate: int
    channels: int
    frames: int
    encoding: Literal["float32le"] = "float32le"
    keccak256: Bytes32Hex = Field(description="of the samples, channel after channel")


class FilePart(_Part):
    format: AudioFormat
    sample_rate: int
    channels: int
    duration_s: float
    size_bytes: int
    audio_hash: Bytes32Hex
    cid: Cid
    encoder: str | None = Field(
        None,
        description="what encoded an MP3 (generator.audio: lameenc-<version>-lame-q3-320k, "
        "libsndfile-<version>-320k); absent for WAV and FLAC, whose one encoder the "
        "environment's versions name, and from MP3 manifests made before the field, which "
        "libsndfile encoded",
        exclude_if=lambda value: value is None,  # so that those keep their canonical bytes
    )


class OutputPart(_Part):
    pcm: PcmPart
    file: FilePart


class Manifest(_Part):
    kind: Literal["acesteps.generation-manifest"] = MANIFEST_KIND
    schema_version: Literal[1] = 1
    request: RequestPart
    job: JobPart
    model_input: ModelInputPart
    sampling: SamplingPart
    model: ModelPart
    adapter: AdapterPart | None = Field(
        None,
        description="the LoRA adapter it ran with; absent when none",
        exclude_if=lambda value: value is None,  # manifests without one keep their bytes
    )
    edit: EditPart | None = Field(
        None,
        description="an edit: what the model did with the source; absent otherwise",
        exclude_if=lambda value: value is None,
    )
    environment: EnvironmentPart
    output: OutputPart


def canonical(manifest: Manifest) -> bytes:
    """The manifest's bytes: RFC 8785 canonical JSON (what is pinned and hashed)."""
    encoded: bytes = rfc8785.dumps(manifest.model_dump(mode="json"))
    return encoded


def manifest_hash(data: bytes) -> str:
    """``manifestHash``: keccak256 of the canonical bytes, ``0x``-hex."""
    return keccak256_hex(data)


def parse_manifest(data: bytes) -> Manifest:
    """A manifest from its bytes; ValueError unless they are one, in canonical form."""
    manifest = Manifest.model_validate_json(data)
    if canonical(manifest) != data:
        raise ValueError("the manifest is not in canonical form (RFC 8785)")
    return manifest
