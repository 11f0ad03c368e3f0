"""IPFS: a thin client of the Kubo RPC API and the local CID computation that checks it."""

from acesteps.ipfs.kubo import (
    AddResult,
    KuboClient,
    KuboError,
    KuboRequestError,
    KuboUnavailable,
)
from acesteps.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, CidBuilder, cid_of_bytes

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "AddResult",
    "CidBuilder",
    "KuboClient",
    "KuboError",
    "KuboRequestError",
    "KuboUnavailable",
    "cid_of_bytes",
]
