"""The generation manifest and re-running a track from it, with the tiny checkpoint on CPU.

The worker's manifest describes what it made (hashes of the PCM and of the file), its bytes
are canonical, and `generator.reproduce` re-runs it with the same code: identical bytes, or a
clear DIFFERENT / CANNOT TELL. The end-to-end test (services, chain, IPFS, a separate process)
is tests/integration/test_provenance.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.manifest import Manifest, canonical, parse_manifest
from acesteps.messages import GenerationRequest
from generator import audio
from generator.digest import weights_digest
from generator.jobs import Job
from generator.model import Model
from generator.pipeline import Encoded, pcm_keccak256
from generator.provenance import build_manifest
from generator.reproduce import reproduce
from generator.settings import GeneratorSettings
from tests.unit.generator_fixtures import tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

REQUEST = GenerationRequest(
    request_id="0x" + "5a" * 32,
    source="http",
    requester="k",
    offchain_id="0x" + "6b" * 32,
    prompt="rain on a tin roof",
    tags=("calm",),
    duration_s=5,
    format="wav",
)


@pytest.fixture(scope="module")
def manifest(tiny_model: Model) -> Manifest:
    job = Job.from_request(REQUEST)
    (raw,) = tiny_model.generate([job])
    data = audio.encode(raw, job.duration_s, REQUEST.format)
    encoded = Encoded(
        data, keccak256_hex(data), cid_of_bytes(data), {}, pcm_keccak256(raw), raw.shape[-1], 1
    )
    return build_manifest(REQUEST, job, tiny_model, encoded)


def test_the_manifest_says_what_was_made_and_how(manifest: Manifest, tiny_dir: Path) -> None:
    assert manifest.request.options.prompt == REQUEST.prompt
    assert manifest.job.caption == "rain on a tin roof, calm"
    assert manifest.model.source == "tiny" and manifest.model.dtype == "float32"
    assert manifest.model.weights_digest == weights_digest(tiny_dir)
    assert manifest.output.pcm.frames == 5 * 48_000
    assert manifest.output.file.format == "wav" and manifest.output.file.size_bytes > 0
    assert "torch" in manifest.environment.packages and manifest.environment.device.type == "cpu"
    assert "rain on a tin roof, calm" in manifest.model_input.text


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
