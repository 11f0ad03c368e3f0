"""A track's generation manifest, as anyone can fetch and check it: ``provenanceOf`` on the
chain, the bytes from IPFS (any `acesteps.bytesources.ByteSource`), their keccak256 against the
registered ``manifestHash``, their form (canonical JSON) and content (`acesteps.manifest`).
Used by ``acesteps verify``, ``acesteps reproduce`` and the API's ``/manifest``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from acesteps.bytesources import ByteSource, Unreachable, read_all
from acesteps.manifest import Manifest, manifest_hash, parse_manifest
from acesteps.registry import Provenance, Registry

__all__ = ["MAX_MANIFEST_BYTES", "Checked", "ManifestProblem", "check_manifest", "fetch_manifest"]

MAX_MANIFEST_BYTES: Final = 1 << 20  # a manifest with the longest lyrics is a few KB


class ManifestProblem(Exception):
    """Why a manifest cannot be used: absent (nothing registered), unreachable, mismatch (its
    bytes are not the registered ones, or it describes another file), malformed."""

    def __init__(
        self, kind: Literal["absent", "unreachable", "mismatch", "malformed"], message: str
    ) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Checked:
    manifest: Manifest
    data: bytes
    provenance: Provenance


def check_manifest(data: bytes, provenance: Provenance) -> Manifest:
    """``data`` as the manifest ``provenance`` names, or `ManifestProblem`."""
    got = manifest_hash(data)
    if got != provenance.manifest_hash:
        raise ManifestProblem(
            "mismatch",
            f"the manifest's bytes hash to {got}, the chain registered {provenance.manifest_hash}",
        )
    try:
        return parse_manifest(data)
    except ValueError as exc:
        raise ManifestProblem("malformed", f"not a generation manifest: {exc}") from None


async def fetch_manifest(registry: Registry, request_id: str, source: ByteSource) -> Checked:
    """The registered manifest of ``request_id``, fetched and checked; `ManifestProblem`."""
    provenance = await registry.provenance_of(request_id)
    if provenance is None:
        raise ManifestProblem("absent", f"request {request_id} has no registered provenance")
    try:
        data = await read_all(source, provenance.manifest_cid, MAX_MANIFEST_BYTES)
    except Unreachable as exc:
        raise ManifestProblem(
            "unreachable", f"manifest {provenance.manifest_cid} unreachable: {exc}"
        ) from None
    manifest = check_manifest(data, provenance)
    if manifest.request.request_id != request_id:
        raise ManifestProblem("mismatch", f"the manifest describes {manifest.request.request_id}")
    return Checked(manifest, data, provenance)
