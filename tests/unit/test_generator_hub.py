"""Downloads from the hub (`generator.hub`), against a local stand-in for it (`tests.hubstandin`).

The hub is not reachable from the test machines, so everything about downloads runs against
an aiohttp server that answers what huggingface_hub asks (model info with file metadata, the
``resolve`` URLs with ETag, X-Repo-Commit, Content-Length and ranges), at ``HF_ENDPOINT``.
huggingface_hub reads ``HF_ENDPOINT`` once, at import (``huggingface_hub.constants``); the pull
reads the environment when it runs, so setting the variable here is enough in this process,
and the command-line tests set it for their subprocess.

Checked: the size is announced and every file checked against the hub's hash; a dropped
connection, a partial file left by an earlier pull and a pull killed half-way all resume
with a Range request; a file that does not match is deleted and the checkpoint refused; too
little disk space refuses before anything is fetched; an unreachable hub says how to bring
the weights over; a hub source is pulled, loaded and named by its hub id (also when the pulled
directory is copied elsewhere) with the commit it pulled, so a track made with it reproduces
where the manifest's commit is pulled again; ``auto`` pulls on first use with CUDA and,
without, tells how to get real music; ``acesteps models pull`` and ``list`` on the command
line.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from acesteps.messages import GenerationRequest
from generator import hub
from generator.digest import weights_digest
from generator.errors import ModelUnavailable
from generator.jobs import Job
from generator.model import _auto, load_pipeline
from generator.reproduce import reproduce
from generator.settings import DEFAULT_MODEL_ID, GeneratorSettings
from generator.tiny import ensure_tiny
from tests.hubstandin import COMMIT, HubRepo, StandInHub, running_hub
from tests.unit.generator_fixtures import made, tiny_dir, tiny_settings

__all__ = ["tiny_dir", "tiny_settings"]

ROOT = Path(__file__).resolve().parents[2]
REPO = "acesteps-test/tiny-diffusers"
BIG = "condition_encoder/diffusion_pytorch_model.safetensors"  # the largest file


@pytest.fixture(scope="module")
def checkpoint(tiny_dir: Path) -> Path:
    return ensure_tiny(tiny_dir)


@pytest.fixture
def stand_in(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> StandInHub:
    repo = HubRepo.of_directory(checkpoint)
    with running_hub({REPO: repo, DEFAULT_MODEL_ID: repo}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        yield server


@pytest.fixture
def settings(tiny_settings: GeneratorSettings, tmp_path: Path) -> GeneratorSettings:
    return tiny_settings.with_overrides(models_dir=tmp_path / "models")


def _gets(server: StandInHub, path: str) -> list[str | None]:
    """The Range headers of the GETs of ``path``'s file, in order."""
    return [r for method, p, r in server.log if method == "GET" and p.endswith("/" + path)]


# ------------------------------------------------------------------ pulling


def test_a_pull_announces_the_size_and_checks_every_file(
    stand_in: StandInHub, checkpoint: Path, tmp_path: Path
) -> None:
    said: list[str] = []
    dest = hub.pull(REPO, tmp_path / "pulled", say=said.append)
    files = len(HubRepo.of_directory(checkpoint).files)
    size = hub.human(sum(len(b) for b in HubRepo.of_directory(checkpoint).files.values()))
    assert said[0].startswith(f"{REPO}@{COMMIT[:12]}: {files} files, {size}")
    assert said[-1].endswith(f"complete and checked in {dest}")
    info = [p for m, p, _ in stand_in.log if p.startswith("/api/models/")]
    assert info == [f"/api/models/{REPO}"]  # one model-info call, with file metadata
    assert weights_digest(dest) == weights_digest(checkpoint)
    record = hub.pulled_record(dest)
    assert record is not None and record["commit"] == COMMIT and len(record["files"]) == files
    assert not (dest / hub.PARTIAL_DIR).exists()
    stand_in.log.clear()
    hub.pull(REPO, dest, say=said.append)  # all there: nothing fetched again
    assert [m for m, p, _ in stand_in.log if "/resolve/" in p] == []


def test_a_dropped_connection_resumes_with_a_range_request(
    stand_in: StandInHub, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB) and
    # resumes after the last one written; the tiny files are smaller than that.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    stand_in.drop_after[BIG] = 100_000
    dest = hub.pull(REPO, tmp_path / "pulled", say=lambda _: None)
    assert _gets(stand_in, BIG) == [None, "bytes=65536-"]
    assert weights_digest(dest) == weights_digest(checkpoint)


def test_a_partial_file_left_by_an_interrupted_pull_is_resumed(
    stand_in: StandInHub, checkpoint: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "pulled"
    partial = dest / hub.PARTIAL_DIR / BIG
    partial.parent.mkdir(parents=True)
    partial.write_bytes((checkpoint / BIG).read_bytes()[:50_000])
    said: list[str] = []
    hub.pull(REPO, dest, say=said.append)
    assert _gets(stand_in, BIG) == ["bytes=50000-"]
    assert any(line.endswith("resuming at 50.0 kB)") for line in said)
    assert weights_digest(dest) == weights_digest(checkpoint)


def test_a_pull_killed_half_way_resumes_where_it_stopped(tmp_path: Path) -> None:
    weights = random.Random(7).randbytes(24 * 2**20)  # bigger than huggingface_hub's 10 MB chunks
    repo = HubRepo({"model_index.json": b"{}", "transformer/big.safetensors": weights})
    dest = tmp_path / "pulled"
    partial = dest / hub.PARTIAL_DIR / "transformer" / "big.safetensors"
    with running_hub({"acesteps-test/big": repo}) as server:
        server.throttle_s = 0.01  # about 6 MB/s: slow enough to stop it half-way
        env = _cli_env(tmp_path, server.url)
        argv = [*_acesteps(), "models", "pull", "acesteps-test/big", "--local-dir", str(dest)]
        first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not (partial.is_file() and partial.stat().st_size >= 10 * 2**20):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first pull never wrote a chunk"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        kept = partial.stat().st_size
        assert 0 < kept < len(weights)
        server.throttle_s = 0.0
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        ranges = [r for m, p, r in server.log if m == "GET" and p.endswith("big.safetensors")]
    assert ranges == [None, f"bytes={kept}-"]
    assert f"resuming at {hub.human(kept)}" in second.stderr
    assert (dest / "transformer" / "big.safetensors").read_bytes() == weights


def test_a_file_that_does_not_match_is_deleted_and_the_checkpoint_refused(
    stand_in: StandInHub, checkpoint: Path, settings: GeneratorSettings, tmp_path: Path
) -> None:
    stand_in.corrupt.add(BIG)
    dest = tmp_path / "pulled"
    with pytest.raises(hub.ChecksumMismatch) as exc:
        hub.pull(REPO, dest, say=lambda _: None)
    message = str(exc.value)
    want = HubRepo.of_directory(checkpoint).files[BIG]
    assert BIG in message and __import__("hashlib").sha256(want).hexdigest() in message
    assert "deleted" in message and "refused" in message
    assert not (dest / BIG).exists() and not (dest / hub.PARTIAL_DIR / BIG).exists()
    assert hub.pulled_record(dest) is None  # incomplete: never loaded as a pulled checkpoint
    # The generator refuses to load it too.
    with pytest.raises(ModelUnavailable, match="but the hub lists"):
        load_pipeline(settings.with_overrides(generator_model=REPO))


def test_too_little_disk_space_refuses_before_fetching_anything(
    stand_in: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "_free_bytes", lambda _: 1000)
    with pytest.raises(hub.NotEnoughSpace) as exc:
        hub.pull(REPO, tmp_path / "pulled", say=lambda _: None)
    message = str(exc.value)
    assert "needs 1.3 MB of free disk space" in message and "only 1.0 kB is free" in message
    assert f"acesteps models pull {REPO} --local-dir DIR" in message
    assert [p for _, p, _ in stand_in.log if "/resolve/" in p] == []


def test_an_unreachable_hub_says_how_to_bring_the_weights_over(
    settings: GeneratorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ModelUnavailable) as exc:
        load_pipeline(settings.with_overrides(generator_model=REPO))
    message = str(exc.value)
    assert "the hub is unreachable" in message
    assert f"acesteps models pull {REPO} --local-dir DIR" in message
    assert "copy DIR here" in message and "ACESTEPS_GENERATOR_MODEL" in message


# ------------------------------------------------------------------ loading


def test_a_hub_source_is_pulled_on_first_use_and_named_by_its_hub_id(
    stand_in: StandInHub, checkpoint: Path, settings: GeneratorSettings
) -> None:
    model = load_pipeline(settings.with_overrides(generator_model=REPO))
    assert model.checkpoint.source == REPO and model.model_id == REPO
    assert model.checkpoint.revision == COMMIT  # the commit pulled, for a re-run
    assert model.checkpoint.path == hub.pulled_dir(settings.models_dir, REPO)
    assert model.checkpoint.weights_digest == weights_digest(checkpoint)
    stand_in.log.clear()
    load_pipeline(settings.with_overrides(generator_model=REPO))  # from the pulled copy
    assert stand_in.log == []


def test_a_pulled_directory_copied_elsewhere_keeps_its_hub_identity(
    stand_in: StandInHub, settings: GeneratorSettings, tmp_path: Path
) -> None:
    dest = hub.pull(REPO, tmp_path / "carried", say=lambda _: None)
    model = load_pipeline(settings.with_overrides(generator_model=str(dest)))
    # The files are exactly the hub's commit: manifests name it, and reproduce anywhere.
    assert (model.checkpoint.source, model.checkpoint.revision) == (REPO, COMMIT)
    assert model.model_id == REPO


def test_a_track_of_a_pulled_model_reproduces_from_another_machines_pull(
    stand_in: StandInHub, settings: GeneratorSettings, tmp_path: Path
) -> None:
    model = load_pipeline(settings.with_overrides(generator_model=REPO))
    request = GenerationRequest(
        request_id="0x" + "5c" * 32, source="http", requester="k", prompt="rain", duration_s=5
    )
    manifest, _ = made(model, request, Job.from_request(request, model.name))
    assert (manifest.model.source, manifest.model.revision) == (REPO, COMMIT)
    # Elsewhere: nothing pulled yet; the manifest's hub id and commit fetch the same files.
    elsewhere = settings.with_overrides(models_dir=tmp_path / "elsewhere")
    outcome = reproduce(manifest, elsewhere)
    assert outcome.status == "REPRODUCED", outcome
    assert any(f"/resolve/{COMMIT}/" in p for _, p, _ in stand_in.log)


def test_auto_with_cuda_pulls_the_default_checkpoint_on_first_use(
    stand_in: StandInHub, checkpoint: Path, settings: GeneratorSettings
) -> None:
    # The CUDA branch of `auto`, on a CPU machine: the device only decides the branch.
    located = _auto(settings, torch.device("cuda"))
    assert located.source == DEFAULT_MODEL_ID
    assert located.path == hub.pulled_dir(settings.models_dir, DEFAULT_MODEL_ID)
    assert weights_digest(located.path) == weights_digest(checkpoint)
    stand_in.log.clear()
    assert _auto(settings, torch.device("cuda")) == located and stand_in.log == []


def test_auto_with_cuda_and_no_hub_says_how_and_uses_tiny(
    settings: GeneratorSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING, "generator.model"):
        located = _auto(settings, torch.device("cuda"))
    assert located.source == "tiny"
    assert f"acesteps models pull {DEFAULT_MODEL_ID} --local-dir DIR" in caplog.text
    assert "ACESTEPS_GENERATOR_MODEL=DIR" in caplog.text


def test_auto_without_cuda_uses_tiny_and_says_how_to_get_real_music(
    stand_in: StandInHub, settings: GeneratorSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "generator.model"):
        located = _auto(settings, torch.device("cpu"))
    assert located.source == "tiny"
    text = caplog.text
    assert "TINY random-weight test checkpoint" in text
    assert "ACESTEPS_GENERATOR_MODEL=auto" in text
    assert f"acesteps models pull {DEFAULT_MODEL_ID}" in text
    assert "1.3 MB (the hub's file sizes)" in text  # the stand-in serves the tiny files
    assert "On a CPU it runs, slowly:" in text
    assert [p for _, p, _ in stand_in.log if "/resolve/" in p] == []  # nothing downloaded


# ------------------------------------------------------------------ the command line


def _acesteps() -> list[str]:
    return [sys.executable, "-c", "from acesteps.cli.main import main; raise SystemExit(main())"]


def _cli_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACESTEPS_", "HF_"))}
    return env | {
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": endpoint,  # read by huggingface_hub.constants at import
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "ACESTEPS_CACHE_DIR": str(tmp_path / "cache"),
        "ACESTEPS_MODELS_DIR": str(tmp_path / "models"),
        **extra,
    }


def test_models_pull_and_list_on_the_command_line(
    stand_in: StandInHub, checkpoint: Path, tmp_path: Path
) -> None:
    env = _cli_env(tmp_path, stand_in.url, ACESTEPS_GENERATOR_TINY_DIR=str(checkpoint))
    carried = tmp_path / "carried"
    pulled = subprocess.run(
        [*_acesteps(), "models", "pull", REPO, "--local-dir", str(carried)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    result = json.loads(pulled.stdout)
    assert result["weightsDigest"] == weights_digest(checkpoint)
    assert f"ACESTEPS_GENERATOR_MODEL={carried}" in pulled.stderr
    # One more into the models directory (no --local-dir), not served: listed too.
    again = [*_acesteps(), "models", "pull", REPO]
    assert subprocess.run(again, env=env, capture_output=True, timeout=120).returncode == 0
    served = json.dumps({"a": "tiny", "b": str(carried), "c": "acesteps-test/absent-diffusers"})
    listed = subprocess.run(
        [*_acesteps(), "models", "list", "--json"],
        env=env | {"ACESTEPS_MODELS": served, "ACESTEPS_MODEL_DEFAULT": "b"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    by_name = {row["name"]: row for row in rows}
    assert by_name["a"]["weightsDigest"] == weights_digest(checkpoint)
    assert by_name["a"]["variant"] == "turbo" and by_name["a"]["sizeBytes"] > 0
    assert by_name["b"]["default"] and by_name["b"]["pulledFrom"] == f"{REPO}@{COMMIT}"
    assert by_name["b"]["weightsDigest"] == weights_digest(checkpoint)
    assert not by_name["c"]["present"] and by_name["c"]["missing"] == "acesteps models pull c"
    (other,) = [row for row in rows if row["name"] is None]
    assert other["source"] == REPO
    assert other["path"] == str(hub.pulled_dir(tmp_path / "models", REPO))
    table = subprocess.run(
        [*_acesteps(), "models", "list"], env=env | {"ACESTEPS_MODELS": served},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0 and weights_digest(checkpoint) in table.stdout


def test_models_pull_of_an_unreachable_or_unknown_model_exits_nonzero(tmp_path: Path) -> None:
    env = _cli_env(tmp_path, "http://127.0.0.1:9")
    down = subprocess.run(
        [*_acesteps(), "models", "pull", REPO], env=env, capture_output=True, text=True
    )
    assert down.returncode == 1 and "error:" in down.stderr
    bad = subprocess.run(
        [*_acesteps(), "models", "pull", "not-a-hub-id"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "neither a hub id" in bad.stderr
