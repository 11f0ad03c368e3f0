"""Published files on local disk, for ``GET /api/generations/{id}/audio``.

The first request for a track fetches it from Kubo by CID, checks its keccak256 against the
registered ``audioHash`` (a file that does not match is never served) and keeps it under
``ACESTEPS_API_AUDIO_CACHE_DIR``; aiohttp's file response then answers range requests,
conditional requests and HEAD from disk. Files are named by CID, so the folder can be
deleted at any time.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from pathlib import Path

from acesteps.hashing import Keccak256
from acesteps.ipfs.kubo import KuboClient, KuboError

__all__ = ["AudioCache", "AudioMismatch", "AudioUnavailable"]


class AudioUnavailable(Exception):
    """IPFS did not give the file (retry later)."""


class AudioMismatch(Exception):
    """IPFS gave bytes whose hash is not the registered one."""


class AudioCache:
    def __init__(self, kubo: KuboClient, directory: Path) -> None:
        self._kubo = kubo
        self._dir = directory
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def path(self, cid: str, audio_hash: str, fmt: str) -> Path:
        target = self._dir / f"{cid}.{fmt}"
        if target.exists():
            return target
        async with self._locks[cid]:  # one fetch per file, however many ask at once
            if target.exists():
                return target
            self._dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.part")
            keccak = Keccak256()
            try:
                with tmp.open("wb") as out:
                    async for chunk in self._kubo.cat_iter(cid):
                        keccak.update(chunk)
                        out.write(chunk)
            except KuboError as exc:
                tmp.unlink(missing_ok=True)
                raise AudioUnavailable(f"IPFS did not serve {cid}: {exc}") from exc
            if keccak.hexdigest() != audio_hash:
                tmp.unlink(missing_ok=True)
                got = keccak.hexdigest()
                raise AudioMismatch(f"IPFS served {cid} hashing to {got}, registered {audio_hash}")
            tmp.replace(target)
        self._locks.pop(cid, None)
        return target
