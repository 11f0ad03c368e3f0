"""Topic messages with plausible defaults, for tests that need one and care about a few fields."""

from __future__ import annotations

from typing import Any

from acesteps.messages import TrackPublished

__all__ = ["CID", "track_published"]

CID = "bafkreigxndsvirh3mggovpue6i3g46db6hfaazjueqrly5n6t3mvosqqey"


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
