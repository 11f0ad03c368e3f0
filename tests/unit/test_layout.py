"""The package boundaries of docs/architecture.md, read from the sources' import statements.

The three services never import each other, nor the command line or the development tooling;
only the generator imports torch/diffusers/transformers; the shared library imports no
service, and the command line imports the generator only inside a function (``acesteps
reproduce``), so that ``acesteps`` works without the ``gen`` extra.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("listener", "generator", "publisher")
HEAVY = ("torch", "diffusers", "transformers", "soxr", "lameenc", "numpy")
"""The ``gen`` extra's packages. soundfile is not one: the API decodes uploads with it (a base
dependency, `listener.api.uploads`)."""


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(module, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name, id(node) in top


def _root(name: str) -> str:
    return name.split(".")[0]


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_the_shared_library(service: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _sources(service)
        for name, _ in _imports(path)
        if (_root(name) in SERVICES and _root(name) != service)
        or name.startswith(("acesteps.cli", "acesteps.dev"))
    ]
    assert not bad, bad


def test_only_the_generator_imports_the_model_stack() -> None:
    bad = [
        f"{path.relative_to(ROOT)}: {name}"
        for package in ("acesteps", "listener", "publisher")
        for path in _sources(package)
        for name, _ in _imports(path)
        if _root(name) in HEAVY
    ]
    assert not bad, bad


def test_the_shared_library_imports_no_service() -> None:
    bad = []
    for path in _sources("acesteps"):
        relative = path.relative_to(ROOT).as_posix()
        in_cli = relative.startswith(("acesteps/cli/", "acesteps/dev/"))
        for name, at_top in _imports(path):
            if _root(name) in SERVICES and (at_top or not in_cli or _root(name) != "generator"):
                bad.append(f"{relative}: {name}")
            if not in_cli and name.startswith(("acesteps.cli", "acesteps.dev")):
                bad.append(f"{relative}: {name}")
    assert not bad, bad
