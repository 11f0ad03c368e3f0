"""Building the ``AceStepsRegistry`` artifacts: ``acesteps contracts build`` / ``check``.

``build`` compiles ``contracts/AceStepsRegistry.sol`` (and the libraries beside it) with the
pinned solc-js and writes ``contracts/abi/AceStepsRegistry.json`` (ABI) and ``.bin``
(bytecode); a test recompiles and
fails when the committed artifacts are stale. The services read the committed files as
package data (`acesteps.registry`), so they need neither Node.js nor the compiler.
"""

from __future__ import annotations

import json
from pathlib import Path

from acesteps import rendered
from acesteps.dev import CHECKOUT
from acesteps.registry import NAME

__all__ = ["ABI_DIR", "build", "render", "stale"]

CONTRACTS_DIR = CHECKOUT / "contracts"
ABI_DIR = CONTRACTS_DIR / "abi"


def render() -> dict[str, str]:
    """File name -> content of the artifacts that the current source compiles to."""
    from acesteps.dev.solc import compile_sources  # needs Node.js

    # Every source of the directory: the registry imports its libraries by file name.
    sources = {path.name: path.read_text() for path in sorted(CONTRACTS_DIR.glob("*.sol"))}
    out = compile_sources(sources)[f"{NAME}.sol"][NAME]
    return {
        f"{NAME}.json": json.dumps(out["abi"], indent=2) + "\n",
        f"{NAME}.bin": "0x" + out["evm"]["bytecode"]["object"] + "\n",
    }


def build(directory: Path = ABI_DIR) -> list[Path]:
    return rendered.write(directory, render())


def stale(directory: Path = ABI_DIR) -> list[str]:
    return rendered.stale(directory, render())
