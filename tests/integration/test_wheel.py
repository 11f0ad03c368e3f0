"""The package as a user installs it: a wheel in a fresh virtualenv, outside the source tree.

Builds the wheel, installs it (its runtime dependencies from the package index, no extras)
into a new virtualenv under a temporary directory, and from there runs ``acesteps --version``,
``acesteps schemas check`` (the schemas shipped as package data), ``acesteps verify`` of a
track registered on a private anvil and pinned on the shared Kubo, with its manifest (exit 0,
MATCH), ``acesteps reproduce`` of it (exit 2: it needs the ``gen`` extra, and says so), and imports
each service's entry point. Nothing may come from the checkout: the commands run in another
directory, with no ``PYTHONPATH``, and the test checks where each module was loaded from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from acesteps.chain import connect, deploy_registry
from acesteps.dev.devchain import dev_key
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.manifest import canonical, manifest_hash
from acesteps.registry import Provenance, Registry, Track, offchain_request_id
from acesteps.settings import CommonSettings
from publisher.registrar import register
from publisher.txsender import TxSender
from publisher.txtypes import TxPolicy
from tests.factories import manifest_for
from tests.integration.anvil import Anvil

ROOT = Path(__file__).resolve().parents[2]


def _run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600, code: int = 0
) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    said = f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == code, said
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """(the fresh virtualenv, a clean environment to run it with)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ACESTEPS_"))}
    env["ACESTEPS_CACHE_DIR"] = str(tmp / "cache")
    # 1. The wheel, built as `pip install .` would, from a copy of the checkout (a build writes
    #    build/ and *.egg-info next to the sources).
    source = tmp / "src"
    skip = shutil.ignore_patterns(".cache", ".git", "build", "*.egg-info", "__pycache__", "tests")
    shutil.copytree(ROOT, source, symlinks=True, ignore=skip)
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist")]
    _run([*wheel_cmd, str(source)], tmp, env)
    (wheel,) = (tmp / "dist").glob("acesteps-*.whl")
    # 2. A fresh virtualenv, and the wheel with its runtime dependencies in it.
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp, env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "--disable-pip-version-check", str(wheel)], tmp, env)
    yield venv, env


def test_version(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    out = _run([str(venv / "bin" / "acesteps"), "--version"], tmp_path, env)
    assert out.strip() == "acesteps 0.1.0"


def test_shipped_schemas_are_current(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    _run([str(venv / "bin" / "acesteps"), "schemas", "check"], tmp_path, env)


def test_service_entry_points_import_from_the_wheel(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    python = str(venv / "bin" / "python")
    code = (
        "import listener.__main__, publisher.__main__\n"
        "import listener.api.deps as d, acesteps.registry as r\n"
        "assert (d.STATIC / 'index.html').is_file() and r.abi() and r.bytecode().startswith('0x')\n"
        "assert (d.STATIC / 'verify.js').stat().st_size > 100_000  # the built page script\n"
        "import listener, publisher, acesteps\n"
        "print(listener.__file__, publisher.__file__, acesteps.__file__)"
    )
    for path in _run([python, "-c", code], tmp_path, env).split():
        assert path.startswith(str(venv)), path
    # The generator needs the `gen` extra (torch, diffusers): borrow those from the test's own
    # environment, while the generator's code still comes from the wheel.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = "import generator.__main__, generator; print(generator.__file__)"
    out = _run([python, "-c", code], tmp_path, {**env, "PYTHONPATH": site})
    assert out.strip().startswith(str(venv)), out


async def test_verify_a_registered_track(
    installed: tuple[Path, dict[str, str]], stack: CommonSettings, tmp_path: Path
) -> None:
    venv, env = installed
    node = Anvil(tmp_path).start()
    w3 = connect(node.url)
    try:
        deployment = await deploy_registry(w3, dev_key(0), Account.from_key(dev_key(1)).address)
        registry = Registry(w3, deployment.address)
        sender = TxSender(w3, dev_key(1), TxPolicy(poll_interval_s=0.02, deadline_s=30))
        data = os.urandom(300_000)
        offchain_id = keccak256_hex(os.urandom(16))
        rid = offchain_request_id(31337, registry.address, offchain_id)
        async with KuboClient(stack.ipfs_api_url) as kubo:
            cid = (await kubo.add(data)).cid
            described = manifest_for(
                rid, offchain_id=offchain_id, audio_hash=keccak256_hex(data), cid=cid
            )
            manifest = canonical(described)
            manifest_cid = await kubo.block_put(manifest)
        track = Track(keccak256_hex(data), cid)
        provenance = Provenance(manifest_hash(manifest), manifest_cid)
        await register(registry, sender, rid, track, provenance, 1, offchain_id=offchain_id)

        argv = [str(venv / "bin" / "acesteps"), "verify", rid, "--rpc-url", node.url]
        argv += ["--contract", deployment.address, "--ipfs-api-url", stack.ipfs_api_url]
        out = _run(argv, tmp_path, env)
        assert out.startswith("MATCH: "), out
        assert keccak256_hex(data) in out and cid in out and manifest_cid in out

        # Re-running needs the generator's packages, which the wheel alone does not bring.
        argv[1] = "reproduce"
        out = _run(argv, tmp_path, env, code=2)
        assert out.startswith("CANNOT TELL: ") and "acesteps[gen]" in out, out
    finally:
        await w3.provider.disconnect()
        node.stop()
