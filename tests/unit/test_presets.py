"""Style presets in the generator: a preset's tags and LoRA adapter, through the real pipeline
with the tiny checkpoint and tiny adapters built in the test (`tests.tinylora`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.records import InRecord
from acesteps.manifest import canonical, parse_manifest
from acesteps.messages import (
    AudioReady,
    GenerationFailed,
    GenerationRequest,
    decode,
    encode,
    headers_for,
)
from acesteps.presets import PresetCatalog, PresetSpec, PresetsSettings
from acesteps.topics import Topics
from generator.jobs import Job, Style
from generator.model import Model, load_pipeline
from generator.pipeline import Encoded, Pipeline, pcm_keccak256
from generator.policy import ContentPolicy
from generator.presets import (
    PresetNotForModelError,
    Presets,
    PresetUnavailable,
    UnknownPresetError,
    adapter_file,
)
from generator.provenance import build_manifest
from generator.reproduce import reproduce
from generator.served import ServedModels
from generator.settings import GeneratorSettings
from generator.worker import Deps, handle, prefetch
from tests.tinylora import build_tiny_lora
from tests.unit.generator_fixtures import made, tiny_dir, tiny_model, tiny_settings

__all__ = ["tiny_dir", "tiny_model", "tiny_settings"]

TOPICS = Topics("t")


def _request(**changes: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "request_id": "0x" + "ab" * 32,
        "source": "http",
        "requester": "key-1",
        "prompt": "a slow piano piece",
        "tags": ["piano"],
        "duration_s": 5,
        "seed": 11,
        "format": "wav",
    }
    return GenerationRequest.model_validate(fields | changes)


@pytest.fixture(scope="module")
def model(tiny_settings: GeneratorSettings, tiny_model: Model) -> Model:
    """A model of its own: adapters loaded here stay out of the shared one."""
    assert tiny_model.checkpoint.path.is_dir()  # the checkpoint is built
    return load_pipeline(tiny_settings)


@pytest.fixture(scope="module")
def loras(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    checkpoint = tiny_model.checkpoint.path
    return {
        "a": build_tiny_lora(checkpoint, root / "a", seed=1),
        "b": build_tiny_lora(checkpoint, root / "b", seed=2),
    }


def _sha(file: Path) -> str:
    return "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()


def _presets(loras: dict[str, Path], **more: dict[str, object]) -> Presets:
    table = {
        "warm": {"lora": str(loras["a"].parent), "scale": 1.0, "tags": ["warm", "Piano"]},
        "half": {"lora": str(loras["a"]), "scale": 0.5},
        "other": {"lora": str(loras["b"])},
        "strings": {"tags": ["strings", "cinematic"]},
    }
    return Presets(PresetsSettings(presets=table | more).preset_catalog())  # type: ignore[arg-type]


def _pcm(model: Model, job: Job) -> str:
    (raw,) = model.generate([job])
    return pcm_keccak256(raw)


# ------------------------------------------------------------------ the setting


def test_the_setting_takes_a_path_or_an_object_and_refuses_empty_presets() -> None:
    settings = PresetsSettings(presets='{"lofi": "/adapters/lofi.safetensors"}')  # type: ignore[arg-type]
    assert settings.preset_catalog().presets["lofi"].lora == "/adapters/lofi.safetensors"
    with pytest.raises(ValidationError, match="needs a LoRA adapter"):
        PresetSpec()
    with pytest.raises(ValidationError, match="pins an adapter file"):
        PresetSpec(tags=("x",), digest="sha256:" + "0" * 64)
    with pytest.raises(ValidationError, match="less than or equal to 4"):
        PresetSpec(lora="/a", scale=5)


def test_a_preset_names_its_models_and_unknown_names_are_refused(
    loras: dict[str, Path],
) -> None:
    presets = _presets(loras, only={"tags": ["x"], "models": ["tiny-b"]})
    with pytest.raises(UnknownPresetError, match=r"unknown preset 'nope'.*warm, half"):
        presets.style("nope", "default")
    with pytest.raises(PresetNotForModelError, match=r"'only' is for the model.*tiny-b"):
        presets.style("only", "default")
    assert presets.style("only", "tiny-b") == Style(tags=("x",))
    assert presets.style(None, "default") is None


# ------------------------------------------------------------------ tags


def test_a_preset_adds_its_tags_after_the_requests_own() -> None:
    style = Style(tags=("warm", "Piano"))
    job = Job.from_request(_request(preset="strings"), style=style)
    assert job.caption == "a slow piano piece, piano, warm"
    assert job.adapter is None


# ------------------------------------------------------------------ the adapter file


def test_the_adapter_digest_is_the_sha256_of_its_file(loras: dict[str, Path]) -> None:
    style = _presets(loras).style("warm", "default")
    assert style is not None and style.adapter is not None
    assert style.adapter.path == str(loras["a"])  # found in its directory
    assert style.adapter.digest == _sha(loras["a"])
    assert style.adapter.scale == 1.0


def test_a_pinned_digest_refuses_another_file(loras: dict[str, Path]) -> None:
    pinned = {"lora": str(loras["b"]), "digest": _sha(loras["a"])}
    with pytest.raises(PresetUnavailable, match="pins sha256:"):
        _presets(loras, pinned=pinned).style("pinned", "default")
    same = {"lora": str(loras["a"]), "digest": _sha(loras["a"])}
    assert _presets(loras, same=same).style("same", "default") is not None


def test_a_missing_or_ambiguous_adapter_is_unavailable(
    loras: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(PresetUnavailable, match="no such adapter"):
        _presets(loras, gone={"lora": str(tmp_path / "gone")}).style("gone", "default")
    (tmp_path / "x.safetensors").write_bytes(b"1")
    (tmp_path / "y.safetensors").write_bytes(b"2")
    with pytest.raises(PresetUnavailable, match=r"holds 2 \.safetensors files"):
        adapter_file(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"3")
    assert adapter_file(tmp_path).name == "adapter_model.safetensors"  # PEFT's name


# ------------------------------------------------------------------ through the model


def test_an_adapter_changes_the_audio_and_without_it_the_bytes_are_unchanged(
    model: Model, tiny_model: Model, loras: dict[str, Path]
) -> None:
    presets = _presets(loras)
    plain = Job.from_request(_request())
    before = _pcm(tiny_model, plain)  # a model that never loaded an adapter
    warm = Job.from_request(_request(preset="warm"), style=presets.style("warm", "default"))
    half = Job.from_request(_request(preset="half"), style=presets.style("half", "default"))
    with_warm = _pcm(model, warm)
    assert with_warm != before
    assert _pcm(model, plain) == before  # adapter loaded, disabled: the same bytes
    with_half = _pcm(model, half)
    assert with_half not in (with_warm, before)  # the scale counts
    assert _pcm(model, warm) == with_warm  # deterministic, after another scale


def test_a_tracks_bytes_do_not_depend_on_adapters_loaded_before(
    tiny_settings: GeneratorSettings, model: Model, loras: dict[str, Path]
) -> None:
    presets = _presets(loras)
    other = Job.from_request(_request(preset="other"), style=presets.style("other", "default"))
    _pcm(model, Job.from_request(_request(preset="warm"), style=presets.style("warm", "default")))
    after_warm = _pcm(model, other)
    fresh = load_pipeline(tiny_settings)
    assert _pcm(fresh, other) == after_warm


def test_jobs_with_other_adapters_never_share_a_pipeline_call(
    tiny_settings: GeneratorSettings, model: Model, loras: dict[str, Path]
) -> None:
    presets = _presets(loras)
    batched = model.with_settings(tiny_settings.with_overrides(generator_batch_mode="batched"))
    styles = [None, presets.style("warm", "default"), presets.style("half", "default")]
    jobs = [Job.from_request(_request(), style=styles[i % 3]) for i in range(6)]
    groups = batched.plan(jobs)
    assert sorted(sorted(g) for g in groups) == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(ValueError, match="one adapter"):
        batched._run([jobs[0], jobs[1]])


def test_a_file_that_is_no_adapter_of_this_model_fails_the_job_not_the_model(
    model: Model, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    bogus = tmp_path / "bogus.safetensors"
    save_file({"transformer.nothing.lora_A.weight": torch.ones(2, 2)}, str(bogus))
    table = {"bogus": {"lora": str(bogus)}}
    style = Presets(PresetCatalog({k: PresetSpec(**v) for k, v in table.items()})).style(
        "bogus", "default"
    )
    job = Job.from_request(_request(preset="bogus"), style=style)
    with pytest.raises(PresetUnavailable, match="does not load into this model"):
        model.generate([job])
    plain = Job.from_request(_request())
    assert model.generate([plain])[0].shape == (2, 5 * 48_000)  # still serves


def test_an_adapter_file_changed_after_its_check_is_refused(
    tiny_settings: GeneratorSettings, loras: dict[str, Path], tmp_path: Path
) -> None:
    file = tmp_path / "pytorch_lora_weights.safetensors"
    file.write_bytes(loras["a"].read_bytes())
    style = Presets(PresetCatalog({"p": PresetSpec(lora=str(file))})).style("p", "default")
    file.write_bytes(loras["b"].read_bytes())  # swapped before the model loads it
    with pytest.raises(PresetUnavailable, match="changed since it was checked"):
        load_pipeline(tiny_settings).generate([Job.from_request(_request(preset="p"), style=style)])


# ------------------------------------------------------------------ provenance


def test_the_manifest_records_the_adapter_and_reproduce_needs_that_file(
    model: Model, tiny_settings: GeneratorSettings, loras: dict[str, Path]
) -> None:
    presets = _presets(loras)
    request = _request(preset="half")
    job = Job.from_request(request, style=presets.style("half", "default"))
    manifest, _ = made(model, request, job)
    assert manifest.adapter is not None
    assert manifest.adapter.digest == _sha(loras["a"])
    assert (manifest.adapter.preset, manifest.adapter.file) == (
        "half",
        "pytorch_lora_weights.safetensors",
    )
    assert manifest.adapter.scale == 0.5
    assert str(loras["a"].parent) not in canonical(manifest).decode()  # no host path
    assert parse_manifest(canonical(manifest)) == manifest

    without = reproduce(manifest, tiny_settings)
    assert without.status == "CANNOT TELL" and "--adapter" in without.reason
    other = reproduce(manifest, tiny_settings, adapter=str(loras["b"]))
    assert other.status == "CANNOT TELL" and "another adapter" in other.reason
    again = reproduce(manifest, tiny_settings, adapter=str(loras["a"].parent))
    assert again.status == "REPRODUCED", again


def test_a_manifest_without_an_adapter_keeps_its_bytes(tiny_model: Model) -> None:
    request = _request()
    job = Job.from_request(request)
    (raw,) = tiny_model.generate([job])
    encoded = Encoded(
        b"x", "0x" + "00" * 32, cid_of_bytes(b"x"), {}, pcm_keccak256(raw), 1, 1, encoder=None
    )
    data = json.loads(canonical(build_manifest(request, job, tiny_model, encoded)))
    assert "adapter" not in data and "preset" not in data["request"]["options"]


# ------------------------------------------------------------------ the worker


@pytest.fixture
async def deps(model: Model, loras: dict[str, Path], tmp_path: Path) -> AsyncIterator[Deps]:
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(loras["a"].read_bytes()[:-8])  # cut short: not a safetensors file
    served = ServedModels.of(model)
    pipeline = Pipeline(served, encode_threads=1)
    feeder = asyncio.create_task(pipeline.run())
    presets = _presets(loras, bogus={"lora": str(bogus)})
    try:
        yield Deps(TOPICS, served, ContentPolicy.from_file(None, enabled=False), pipeline,
                   presets=presets)  # fmt: skip
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)


def _record(req: GenerationRequest) -> InRecord:
    headers = tuple(headers_for(req))
    return InRecord(TOPICS.requests, 0, 0, req.request_id.encode(), encode(req), headers)


async def test_the_worker_runs_a_preset_and_its_manifest_names_the_adapter(
    deps: Deps, loras: dict[str, Path]
) -> None:
    req = _request(preset="warm")
    await prefetch([_record(req)], deps)
    outputs = await handle(_record(req), deps)
    ready = decode(AudioReady, outputs[-1].value)
    assert ready.manifest is not None and ready.manifest.adapter is not None
    assert ready.manifest.adapter.digest == _sha(loras["a"])
    assert ready.manifest.job.caption == "a slow piano piece, piano, warm"
    assert ready.manifest.request.options.preset == "warm"


@pytest.mark.parametrize(
    ("preset", "code", "says"),
    [
        ("nope", "unknown_preset", "unknown preset 'nope'"),
        ("bogus", "preset_unavailable", "does not load into this model"),
    ],
)
async def test_a_preset_that_cannot_run_is_a_failure_record_not_a_crash(
    deps: Deps, preset: str, code: str, says: str
) -> None:
    req = _request(preset=preset)
    await prefetch([_record(req)], deps)
    (out,) = await handle(_record(req), deps)
    failed = decode(GenerationFailed, out.value)
    assert out.topic == TOPICS.failures
    assert (failed.code, failed.stage) == (code, "generator")
    assert says in failed.message
    served = await handle(_record(_request(request_id="0x" + "ef" * 32)), deps)
    assert decode(AudioReady, served[-1].value).manifest is not None  # it still serves


def test_the_start_up_check_names_each_preset_that_cannot_run(
    loras: dict[str, Path], tmp_path: Path
) -> None:
    presets = _presets(loras, gone={"lora": str(tmp_path / "gone.safetensors")})
    (problem,) = presets.check()
    assert "preset 'gone'" in problem and "no such adapter" in problem
