"""The generation manifest of a track, pinned to IPFS before the track is registered with it.

The generator puts the manifest in the `AudioReady` (`acesteps.manifest`); here it is checked
against the file it describes, turned into its canonical bytes (RFC 8785), pinned to our Kubo
as one raw block named by its keccak-256 (so its CID is its ``manifestHash`` in another
spelling, which is all the contract stores), and returned as the `Provenance` the registry
records: keccak256 of those bytes and their CID (recomputed locally, Kubo's answer checked).
"""

from __future__ import annotations

from acesteps.ipfs.kubo import KuboClient, KuboError
from acesteps.manifest import canonical, manifest_hash
from acesteps.messages import AudioReady
from acesteps.registry import Provenance
from publisher.chunks import CorruptAudio
from publisher.errors import PermanentPublisherError, RetryablePublisherError

__all__ = ["MissingManifest", "pin_manifest"]


class MissingManifest(PermanentPublisherError):
    """An AudioReady without a manifest (from an older generator): no provenance to register."""

    code = "missing_manifest"


async def pin_manifest(kubo: KuboClient, ready: AudioReady) -> Provenance:
    manifest = ready.manifest
    if manifest is None:
        raise MissingManifest(f"AudioReady of {ready.request_id} carries no generation manifest")
    file = manifest.output.file
    described = (manifest.request.request_id, file.audio_hash, file.cid, file.size_bytes)
    if described != (ready.request_id, ready.audio_hash, ready.cid, ready.size_bytes):
        raise CorruptAudio(
            f"the manifest of {ready.request_id} describes another file: {described}"
        )
    data = canonical(manifest)
    digest = manifest_hash(data)
    try:
        cid = await kubo.block_put(data, pin=True)
    except KuboError as exc:
        raise RetryablePublisherError(f"adding the manifest of {ready.request_id}: {exc}") from exc
    provenance = Provenance.of(digest)
    if cid != provenance.manifest_cid:
        raise CorruptAudio(
            f"Kubo returned CID {cid} for the manifest, computed {provenance.manifest_cid}"
        )
    return provenance
