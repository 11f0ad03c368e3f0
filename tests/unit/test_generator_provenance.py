"""The generation manifest and re-running a track from it, with the tiny checkpoint on CPU.

The worker's manifest describes what it made (hashes of the PCM and of the file), its bytes
are canonical, and `generator.reproduce` re-runs it with the same code: identical bytes, or a
clear DIFFERENT / CANNOT TELL. The end-to-end test (services, chain, IPFS, a separate process)
is tests/integration/test_provenance.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from acesteps.hashing import keccak256_hex
from acesteps.manifest import Manifest, canonical, parse_manifest
from generator import audio
from generator.digest import weights_digest
from generator.jobs import Job
from generator.model import Model
from generator.pipeline import Encoded, Pipeline
from generator.provenance import build_manifest
from generator.reproduce import reproduce
from generator.served import ServedModels
from generator.settings import GeneratorSettings
from tests.factories import http_request
from tests.unit.generator_fixtures import made, tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

REQUEST = http_request("5a", tags=("calm",))


@pytest.fixture(scope="module")
def manifest(tiny_model: Model) -> Manifest:
    return made(tiny_model, REQUEST, Job.from_request(REQUEST))[0]


def test_the_manifest_says_what_was_made_and_how(manifest: Manifest, tiny_dir: Path) -> None:
    assert manifest.request.options.prompt == REQUEST.prompt
    assert manifest.job.caption == "rain on a tin roof, calm"
    assert manifest.model.source == "tiny" and manifest.model.dtype == "float32"
    assert manifest.model.weights_digest == weights_digest(tiny_dir)
    assert manifest.output.pcm.frames == 5 * 48_000
    assert manifest.output.file.format == "wav" and manifest.output.file.size_bytes > 0
    assert "torch" in manifest.environment.packages and manifest.environment.device.type == "cpu"
    assert "rain on a tin roof, calm" in manifest.model_input.text
    assert manifest.output.file.encoder is None  # a WAV's bytes are this code's own
    assert "encoder" not in json.loads(canonical(manifest))["output"]["file"]


def test_manifest_bytes_are_canonical_and_round_trip(manifest: Manifest) -> None:
    data = canonical(manifest)
    assert parse_manifest(data) == manifest
    assert data == canonical(parse_manifest(data))
    pretty = json.dumps(json.loads(data), indent=2).encode()
    with pytest.raises(ValueError, match="canonical"):
        parse_manifest(pretty)  # the same content, other bytes: another hash


def test_a_track_is_reproduced_byte_for_byte(
    manifest: Manifest, tiny_settings: GeneratorSettings
) -> None:
    outcome = reproduce(manifest, tiny_settings)
    assert outcome.status == "REPRODUCED", outcome
    assert outcome.got_pcm == manifest.output.pcm.keccak256
    assert outcome.got_file == manifest.output.file.audio_hash
    assert outcome.exit_code == 0 and outcome.environment == {}


def test_another_seed_is_different_at_the_model(
    manifest: Manifest, tiny_settings: GeneratorSettings
) -> None:
    changed = manifest.model_copy(update={"job": manifest.job.model_copy(update={"seed": 1})})
    outcome = reproduce(changed, tiny_settings)
    assert (outcome.status, outcome.stage, outcome.exit_code) == ("DIFFERENT", "pcm", 1)


def test_another_checkpoint_cannot_tell(
    manifest: Manifest, tiny_settings: GeneratorSettings
) -> None:
    other = manifest.model.model_copy(update={"weights_digest": "sha256:" + "0" * 64})
    outcome = reproduce(manifest.model_copy(update={"model": other}), tiny_settings)
    assert outcome.status == "CANNOT TELL" and "other weights" in outcome.reason
    local = manifest.model.model_copy(update={"source": "my-finetune"})
    outcome = reproduce(manifest.model_copy(update={"model": local}), tiny_settings)
    assert outcome.status == "CANNOT TELL" and "--model" in outcome.reason


# ------------------------------------------------------------------ the MP3 encoder

MP3_REQUEST = REQUEST.model_copy(update={"request_id": "0x" + "5c" * 32, "format": "mp3"})
UNKNOWN_ENCODER = "lameenc-0.1.0-lame-q3-320k"


@pytest.fixture(scope="module")
def mp3_manifest(tiny_model: Model) -> Manifest:
    """An MP3 track as the worker makes one: encoded in the pipeline, which says by what."""
    job = Job.from_request(MP3_REQUEST)

    async def made() -> Encoded:
        pipeline = Pipeline(ServedModels.of(tiny_model), encode_threads=1)
        feeder = asyncio.create_task(pipeline.run())
        try:
            return await pipeline.result("k", job, "mp3")
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    return build_manifest(MP3_REQUEST, job, tiny_model, asyncio.run(made()))


def _with_encoder(manifest: Manifest, encoder: str | None) -> Manifest:
    file = manifest.output.file.model_copy(update={"encoder": encoder})
    output = manifest.output.model_copy(update={"file": file})
    return manifest.model_copy(update={"output": output})


def test_the_manifest_names_the_mp3_encoder_and_the_track_reproduces(
    mp3_manifest: Manifest, tiny_settings: GeneratorSettings
) -> None:
    assert mp3_manifest.output.file.encoder == audio.MP3_ENCODER == audio.LAMEENC_MP3
    data = canonical(mp3_manifest)
    assert json.loads(data)["output"]["file"]["encoder"] == audio.LAMEENC_MP3
    assert parse_manifest(data) == mp3_manifest
    outcome = reproduce(mp3_manifest, tiny_settings)
    assert outcome.status == "REPRODUCED", outcome
    assert outcome.got_file == mp3_manifest.output.file.audio_hash


def test_an_mp3_manifest_from_before_the_encoder_field_still_reproduces(
    tiny_model: Model, tiny_settings: GeneratorSettings
) -> None:
    """A track made before lameenc: libsndfile's MP3, a manifest without ``encoder``."""
    job = Job.from_request(MP3_REQUEST)
    old, data = made(tiny_model, MP3_REQUEST, job, mp3_encoder=audio.LIBSNDFILE_MP3, recorded=False)
    assert "encoder" not in json.loads(canonical(old))["output"]["file"]  # the old bytes
    outcome = reproduce(old, tiny_settings)
    assert outcome.status == "REPRODUCED", outcome
    assert outcome.got_file == keccak256_hex(data)
    # Named, libsndfile's encoder reproduces it as well; lameenc's does not.
    assert reproduce(_with_encoder(old, audio.LIBSNDFILE_MP3), tiny_settings).status == (
        "REPRODUCED"
    )
    other = reproduce(_with_encoder(old, audio.LAMEENC_MP3), tiny_settings)
    assert (other.status, other.stage) == ("DIFFERENT", "file")


def test_an_encoder_this_install_cannot_run_cannot_tell(
    mp3_manifest: Manifest, tiny_settings: GeneratorSettings
) -> None:
    unknown = _with_encoder(mp3_manifest, UNKNOWN_ENCODER)
    outcome = reproduce(unknown, tiny_settings)
    assert (outcome.status, outcome.stage, outcome.exit_code) == ("CANNOT TELL", None, 2)
    assert UNKNOWN_ENCODER in outcome.reason and audio.LAMEENC_MP3 in outcome.reason
    assert "PCM is identical" in outcome.reason
    assert outcome.got_pcm == mp3_manifest.output.pcm.keccak256 and outcome.got_file is None
    # When the model's output differs already, that is the answer.
    job = unknown.job.model_copy(update={"seed": 1})
    reseeded = reproduce(unknown.model_copy(update={"job": job}), tiny_settings)
    assert (reseeded.status, reseeded.stage) == ("DIFFERENT", "pcm")
    assert UNKNOWN_ENCODER in reseeded.reason and reseeded.got_file is None


def test_the_digest_is_cached_and_follows_changes(tmp_path: Path) -> None:
    checkpoint, cache = tmp_path / "ckpt", tmp_path / "digests.json"
    (checkpoint / "sub").mkdir(parents=True)
    (checkpoint / "a.safetensors").write_bytes(b"weights")
    (checkpoint / "sub" / "config.json").write_text("{}")
    (checkpoint / ".hidden").write_text("left out")
    first = weights_digest(checkpoint, cache)
    assert first == weights_digest(checkpoint, cache) == weights_digest(checkpoint)
    assert len(json.loads(cache.read_text())) == 2
    (checkpoint / ".hidden").write_text("still left out")
    assert weights_digest(checkpoint, cache) == first
    (checkpoint / "a.safetensors").write_bytes(b"Weights")
    assert weights_digest(checkpoint, cache) != first


def test_the_digest_is_what_the_documented_shell_pipeline_computes(tmp_path: Path) -> None:
    # Names whose order differs between path-part order and byte order ("a-c" < "a/b").
    checkpoint = tmp_path / "ckpt"
    (checkpoint / "a").mkdir(parents=True)
    (checkpoint / ".git").mkdir()
    (checkpoint / "a" / "b").write_bytes(b"one")
    (checkpoint / "a-c").write_bytes(b"two")
    (checkpoint / "B").write_bytes(b"three")
    (checkpoint / ".git" / "HEAD").write_bytes(b"left out")
    script = (
        "find -L . -type f ! -path '*/.*' -printf '%P\\n' | LC_ALL=C sort "
        "| xargs -d '\\n' sha256sum | sha256sum"
    )
    shell = subprocess.run(
        ["bash", "-c", script], cwd=checkpoint, capture_output=True, text=True, check=True
    )
    assert weights_digest(checkpoint) == "sha256:" + shell.stdout.split()[0]
