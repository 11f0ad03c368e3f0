"""The JSON Schemas of the topic messages, for the teams that consume the topics.

They are rendered from the message models (`acesteps.messages`) and the generation manifest
(`acesteps.manifest`), committed in ``schemas/``
and shipped in the package (``acesteps/data/schemas``, read with `importlib.resources`).
``acesteps schemas export [--dir DIR]`` writes them; ``acesteps schemas check`` exits 1 when a
directory differs from the code (a test runs it on the committed folder), or when the code
breaks the last released schemas (``schemas/released/v1``, `breaking_changes`).

The exported schemas are consumer schemas (draft 2020-12, ``$id``
``urn:acesteps:schema:v1:NAME``): they leave objects open (no ``additionalProperties:
false``), so that a validator holding them keeps accepting records after an additive change
of a ``.v1`` topic (a new optional field), while the models themselves refuse unknown fields
when the services build a record. ``schema_version`` is required and ``const`` 1: every
producer writes it, and a record of another version never appears on a ``.v1`` topic.
The compatibility policy is in ``docs/topics.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from acesteps import rendered
from acesteps.manifest import Manifest
from acesteps.messages import MESSAGE_TYPES

__all__ = [
    "DIALECT",
    "MAJOR_VERSION",
    "PACKAGED_DIR",
    "RELEASED_DIR",
    "breaking_changes",
    "current",
    "export",
    "load",
    "render",
    "stale",
]

PACKAGED_DIR = Path(str(files("acesteps") / "data" / "schemas")).resolve()
"""The shipped schemas; in a checkout, the committed ``schemas/`` folder itself."""

MAJOR_VERSION: Final = 1
"""The ``.vN`` of the topics these schemas describe."""

RELEASED_DIR = PACKAGED_DIR / "released" / f"v{MAJOR_VERSION}"
"""The schemas of the last release: what consumers may hold; the code must not break them."""

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_VERSION_FIELD: Final = "schema_version"


def render() -> dict[str, str]:
    """File name -> JSON text of every message schema, and of the generation manifest."""
    out = {}
    models: dict[str, type[BaseModel]] = {**MESSAGE_TYPES, "Manifest": Manifest}
    for name, model in sorted(models.items()):
        schema = _for_consumers(model.model_json_schema(mode="serialization"))
        schema["$schema"] = DIALECT
        schema["$id"] = f"urn:acesteps:schema:v{MAJOR_VERSION}:{name}"
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def current() -> dict[str, dict[str, Any]]:
    """Record name -> schema, as the code renders them now."""
    return {name.removesuffix(".json"): json.loads(text) for name, text in render().items()}


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """Record name -> schema of every ``*.json`` file in ``directory``."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def export(directory: Path) -> list[Path]:
    return rendered.write(directory, render())


def stale(directory: Path = PACKAGED_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the code."""
    return rendered.stale(directory, render())


def _objects(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every object schema in ``schema`` (itself, ``$defs``, properties, items, branches)."""
    yield schema
    for value in schema.values():
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, (dict, list)):
            for child in children:
                if isinstance(child, dict):
                    yield from _objects(child)


def _for_consumers(schema: dict[str, Any]) -> dict[str, Any]:
    """Open every object, and pin ``schema_version`` where a model carries it."""
    for node in _objects(schema):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        properties = node.get("properties")
        if isinstance(properties, dict) and SCHEMA_VERSION_FIELD in properties:
            field = properties[SCHEMA_VERSION_FIELD]
            field["const"] = field.get("default", 1)
            required = node.setdefault("required", [])
            if SCHEMA_VERSION_FIELD not in required:
                required.insert(0, SCHEMA_VERSION_FIELD)
    return schema


# ------------------------------------------------------------------ compatibility

_LOWER_LIMITS: Final = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
_UPPER_LIMITS: Final = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")


def breaking_changes(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """What in the schemas ``new`` breaks a consumer of ``old``, one line each (empty: none).

    Both map a record name to its schema (`load`, `current`). Within a ``.vN`` topic a change
    must be additive: every record valid under ``old`` stays valid under ``new``, and every
    field and record type of ``old`` stays. Reported: a removed record type, a removed
    property, a property newly required, a type changed or narrowed (a branch of a union
    dropped), an enum value removed or an enum added, a ``const`` changed or added, a
    ``pattern`` or ``format`` changed or added, a stricter limit (``minLength``,
    ``maxLength``, ``minimum``, ``maximum``, ``minItems``, ``maxItems``, ...), objects closed
    (``additionalProperties``). Allowed: new optional properties, new record types, wider
    limits, new enum values, new union branches, changed descriptions and defaults.
    """
    problems: list[str] = []
    for name in sorted(old):
        if name not in new:
            problems.append(f"{name}: record type removed")
            continue
        problems.extend(_Comparison(old[name], new[name]).compare(old[name], new[name], name))
    return problems


class _Comparison:
    """One schema against its successor; ``$ref``s resolve within each document."""

    def __init__(self, old_root: Mapping[str, Any], new_root: Mapping[str, Any]) -> None:
        self.roots = (old_root, new_root)
        self.seen: set[tuple[str, str]] = set()

    def _resolve(self, node: Mapping[str, Any], side: int) -> tuple[dict[str, Any], str]:
        out, ref = dict(node), ""
        for _ in range(32):
            if "$ref" not in out:
                break
            ref = out.pop("$ref")
            target: Any = self.roots[side]
            for part in ref.removeprefix("#/").split("/") if ref != "#" else ():
                target = target[part]
            out = {**target, **out}
        return out, ref

    def compare(self, old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
        o, o_ref = self._resolve(old, 0)
        n, n_ref = self._resolve(new, 1)
        if o_ref and n_ref:
            if (o_ref, n_ref) in self.seen:  # a recursive schema: compared further up
                return []
            self.seen.add((o_ref, n_ref))
        if _branches(o) is not None or _branches(n) is not None:
            return self._union(o, n, where)
        return self._single(o, n, where)

    def _union(self, o: dict[str, Any], n: dict[str, Any], where: str) -> list[str]:
        problems: list[str] = []
        new_branches = _branches(n) or [n]
        for branch in _branches(o) or [o]:
            resolved, _ = self._resolve(branch, 0)
            kinds = _types(resolved)
            tries = [self._quiet(branch, nb, where) for nb in new_branches]
            if any(not found for found in tries):
                continue
            alike: list[list[str]] = [
                found
                for nb, found in zip(new_branches, tries, strict=True)
                if kinds is None or _accepts(_types(self._resolve(nb, 1)[0]), kinds)
            ]
            if alike:
                fewest = sorted(alike, key=len)[0]  # the branch the old one most resembles
                problems.extend(fewest)
            else:
                problems.append(f"{where}: no longer accepts {_describe(resolved)}")
        return problems

    def _quiet(self, old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
        seen = set(self.seen)
        try:
            return self.compare(old, new, where)
        finally:
            self.seen = seen

    def _single(self, o: dict[str, Any], n: dict[str, Any], where: str) -> list[str]:
        problems: list[str] = []
        old_types, new_types = _types(o), _types(n)
        if new_types is not None and not _accepts(new_types, old_types):
            problems.append(f"{where}: type {_show(old_types)} -> {_show(new_types)}")
        if "const" in n and ("const" not in o or o["const"] != n["const"]):
            before = repr(o["const"]) if "const" in o else "none"
            problems.append(f"{where}: const {before} -> {n['const']!r}")
        if "enum" in n:
            if "enum" in o:
                removed = [v for v in o["enum"] if v not in n["enum"]]
                if removed:
                    problems.append(f"{where}: enum values removed {removed}")
            elif not ("const" in o and o["const"] in n["enum"]):
                problems.append(f"{where}: enum {n['enum']} added")
        for key in ("pattern", "format"):
            if key in n and o.get(key) != n[key]:
                problems.append(f"{where}: {key} {o.get(key)!r} -> {n[key]!r}")
        for key in _LOWER_LIMITS:
            if key in n and (key not in o or n[key] > o[key]):
                problems.append(f"{where}: {key} {o.get(key)} -> {n[key]} (stricter)")
        for key in _UPPER_LIMITS:
            if key in n and (key not in o or n[key] < o[key]):
                problems.append(f"{where}: {key} {o.get(key)} -> {n[key]} (stricter)")
        if n.get("uniqueItems") and not o.get("uniqueItems"):
            problems.append(f"{where}: uniqueItems added")
        problems.extend(self._object(o, n, where))
        if isinstance(o.get("items"), dict) and isinstance(n.get("items"), dict):
            problems.extend(self.compare(o["items"], n["items"], f"{where}[]"))
        elif n.get("items") is False and o.get("items") is not False:
            problems.append(f"{where}: items closed")
        for i, (ob, nb) in enumerate(
            zip(o.get("prefixItems", ()), n.get("prefixItems", ()), strict=False)
        ):
            problems.extend(self.compare(ob, nb, f"{where}[{i}]"))
        return problems

    def _object(self, o: dict[str, Any], n: dict[str, Any], where: str) -> list[str]:
        problems: list[str] = []
        old_props: dict[str, Any] = o.get("properties", {})
        new_props: dict[str, Any] = n.get("properties", {})
        for name in old_props:
            if name not in new_props:
                problems.append(f"{where}.{name}: property removed")
        old_required = set(o.get("required", ()))
        for name in n.get("required", ()):
            if name not in old_required:
                problems.append(f"{where}.{name}: newly required")
        for name, schema in old_props.items():
            if name in new_props:
                problems.extend(self.compare(schema, new_props[name], f"{where}.{name}"))
        old_extra = o.get("additionalProperties", True)
        new_extra = n.get("additionalProperties", True)
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            problems.extend(self.compare(old_extra, new_extra, f"{where}.*"))
        elif new_extra is not True and old_extra is True:
            problems.append(f"{where}: additionalProperties closed or restricted")
        elif new_extra is False and old_extra is not False:
            problems.append(f"{where}: additionalProperties closed")
        return problems


def _branches(node: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    found = node.get("anyOf", node.get("oneOf"))
    return list(found) if isinstance(found, list) else None


def _types(node: Mapping[str, Any]) -> frozenset[str] | None:
    """The JSON types a schema allows; None: any (no ``type`` keyword)."""
    kind = node.get("type")
    if kind is None:
        return None
    return frozenset([kind] if isinstance(kind, str) else kind)


def _accepts(new: frozenset[str] | None, old: frozenset[str] | None) -> bool:
    """Whether types ``new`` allow every value of types ``old``."""
    if new is None:
        return True
    if old is None:
        return False
    widened = new | ({"integer"} if "number" in new else set())
    return old <= widened


def _show(kinds: frozenset[str] | None) -> str:
    return "any" if kinds is None else "|".join(sorted(kinds))


def _describe(node: Mapping[str, Any]) -> str:
    for key in ("const", "enum"):
        if key in node:
            return f"{key} {node[key]!r}"
    return f"type {_show(_types(node))}"
