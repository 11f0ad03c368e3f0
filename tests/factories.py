"""Topic messages with plausible defaults, for tests that need one and care about a few fields."""

from __future__ import annotations

from typing import Any

from acesteps.hashing import keccak256_hex
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.manifest import Manifest
from acesteps.messages import GenerationRequest, TrackPublished

__all__ = ["CID", "http_request", "manifest_for", "track_published"]

CID = "bafkreigxndsvirh3mggovpue6i3g46db6hfaazjueqrly5n6t3mvosqqey"


def http_request(byte: str, **fields: Any) -> GenerationRequest:
    """An HTTP `GenerationRequest` whose ids repeat ``byte`` (two hex digits): a 5 s WAV of
    rain on a tin roof; ``fields`` replace the defaults."""
    defaults: dict[str, Any] = {
        "source": "http",
        "requester": "k",
        "offchain_id": "0x" + byte[::-1] * 32,
        "prompt": "rain on a tin roof",
        "duration_s": 5,
        "format": "wav",
    }
    return GenerationRequest(request_id="0x" + byte * 32, **{**defaults, **fields})


def track_published(request_id: str, **fields: Any) -> TrackPublished:
    """A `TrackPublished` for ``request_id``; ``fields`` replace the defaults."""
    defaults: dict[str, Any] = {
        "audio_hash": "0x" + "ab" * 32,
        "cid": CID,
        "urls": (f"ipfs://{CID}", f"http://127.0.0.1:18080/ipfs/{CID}"),
        "chain_id": 31337,
        "contract": "0x" + "12" * 20,
        "tx_hash": "0x" + "cd" * 32,
        "block_number": 42,
        "format": "mp3",
        "size_bytes": 480_000,
        "duration_s": 30.0,
        "seed": 7,
        "model_id": "tiny-acestep-v1",
    }
    return TrackPublished(request_id=request_id, **{**defaults, **fields})


def manifest_for(
    request_id: str,
    data: bytes = b"",
    *,
    source: str = "http",
    offchain_id: str | None = None,
    fmt: str = "mp3",
    audio_hash: str | None = None,
    cid: str | None = None,
) -> Manifest:
    """A generation manifest for ``data`` (or a file of ``audio_hash`` and ``cid``) as a
    worker would write it, with a made-up model and environment: for tests of what carries
    manifests, not of generation."""
    return Manifest.model_validate(
        {
            "request": {
                "request_id": request_id,
                "source": source,
                "offchain_id": offchain_id,
                "options": {"prompt": "a test track", "duration_s": 30, "format": fmt},
            },
            "job": {
                "caption": "a test track",
                "lyrics": "[Instrumental]",
                "duration_s": 30,
                "seed": 1,
            },
            "model_input": {
                "text": "a test track",
                "lyrics": "[Instrumental]",
                "text_tokens": 3,
                "lyric_tokens": 2,
                "pipeline_duration_s": 30,
                "latent_frames": 750,
            },
            "sampling": {
                "steps": 8,
                "shift": 3,
                "guidance_scale": 1,
                "vocal_language": "en",
                "batch_mode": "sequential",
                "batch_size": 1,
                "vae_tiling": False,
            },
            "model": {
                "id": "test",
                "source": "tiny",
                "weights_digest": "sha256:" + "0" * 64,
                "dtype": "float32",
            },
            "environment": {
                "python": "3.11.7",
                "packages": {"torch": "test"},
                "device": {"type": "cpu", "name": "test", "threads": 1},
            },
            "output": {
                "pcm": {
                    "sample_rate": 48000,
                    "channels": 2,
                    "frames": 1,
                    "keccak256": "0x" + "0" * 64,
                },
                "file": {
                    "format": fmt,
                    "sample_rate": 44100,
                    "channels": 2,
                    "duration_s": 30,
                    "size_bytes": len(data),
                    "audio_hash": audio_hash or keccak256_hex(data),
                    "cid": cid or cid_of_bytes(data),
                },
            },
        }
    )
