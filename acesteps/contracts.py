"""The ``AceStepsRegistry`` contract: build its artifacts, load its ABI.

``acesteps contracts build`` compiles ``contracts/AceStepsRegistry.sol`` with the pinned
solc-js and writes ``contracts/abi/AceStepsRegistry.json`` (ABI) and ``.bin`` (bytecode);
a test recompiles and fails when the committed artifacts are stale. The services load the ABI
from the committed file, so they need neither Node.js nor the compiler.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ABI_DIR", "NAME", "build", "bytecode", "load_abi", "render", "stale"]

NAME = "AceStepsRegistry"
CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
ABI_DIR = CONTRACTS_DIR / "abi"


def render() -> dict[str, str]:
    """File name -> content of the artifacts that the current source compiles to."""
    from acesteps.solc import compile_sources  # needs Node.js: build time only

    source = (CONTRACTS_DIR / f"{NAME}.sol").read_text()
    out = compile_sources({f"{NAME}.sol": source})[f"{NAME}.sol"][NAME]
    return {
        f"{NAME}.json": json.dumps(out["abi"], indent=2) + "\n",
        f"{NAME}.bin": "0x" + out["evm"]["bytecode"]["object"] + "\n",
    }


def build(directory: Path = ABI_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, text in render().items():
        (directory / filename).write_text(text)
        paths.append(directory / filename)
    return paths


def stale(directory: Path = ABI_DIR) -> list[str]:
    return [
        name
        for name, text in render().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


@cache
def load_abi() -> list[dict[str, Any]]:
    abi: list[dict[str, Any]] = json.loads((ABI_DIR / f"{NAME}.json").read_text())
    return abi


@cache
def bytecode() -> str:
    return (ABI_DIR / f"{NAME}.bin").read_text().strip()
