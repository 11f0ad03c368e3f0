"""Compile Solidity offline with solc-js (the npm package ``solc`` that scripts/stack installs).

Used to build ``contracts/`` and by the tests that check the committed artifacts are current.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from acesteps.dev import CHECKOUT
from acesteps.dev.localstack import StackSettings

__all__ = ["SolcError", "compile_sources", "solc_version"]

_SCRIPT = CHECKOUT / "contracts" / "solc-compile.cjs"


class SolcError(RuntimeError):
    """The compiler reported errors (the messages are in the exception text)."""


def _node(args: list[str], stdin: str, node_modules: Path) -> str:
    if not (node_modules / "solc").is_dir():
        raise SolcError(f"solc-js not found in {node_modules}: run `scripts/stack install`")
    proc = subprocess.run(
        ["node", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"NODE_PATH": str(node_modules), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=False,
    )
    if proc.returncode != 0:
        raise SolcError(proc.stderr.strip() or f"node exited {proc.returncode}")
    return proc.stdout


def solc_version(node_modules: Path | None = None) -> str:
    modules = node_modules or StackSettings().node_modules
    return _node(["-e", "process.stdout.write(require('solc').version())"], "", modules)


def compile_sources(
    sources: dict[str, str],
    *,
    optimize_runs: int = 200,
    evm_version: str = "cancun",
    node_modules: Path | None = None,
) -> dict[str, Any]:
    """Compile ``{file name: source}``; returns solc's ``contracts`` output.

    Raises `SolcError` with every error message when compilation fails.
    """
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {
            "optimizer": {"enabled": True, "runs": optimize_runs},
            "evmVersion": evm_version,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "metadata"]}},
        },
    }
    out = json.loads(
        _node([str(_SCRIPT)], json.dumps(request), node_modules or StackSettings().node_modules)
    )
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise SolcError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    contracts: dict[str, Any] = out["contracts"]
    return contracts
