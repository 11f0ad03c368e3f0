"""Published files on local disk, for ``GET /api/generations/{id}/audio``.

The first request for a track fetches it from Kubo by CID, checks its keccak256 against the
registered ``audioHash`` (a file that does not match is never served) and keeps it under
``ACESTEPS_API_AUDIO_CACHE_DIR``; aiohttp's file response then answers range requests,
conditional requests and HEAD from disk. Files are named by CID, so the folder can be
deleted at any time. The folder is kept under ``ACESTEPS_API_AUDIO_CACHE_MB``: after each
fetch the least recently served files go first, except those served in the last minute (a
response may be about to open them). A serve marks the file's access time, never its
modification time: that is its Last-Modified, which must not change while it is cached.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from acesteps.hashing import Keccak256
from acesteps.ipfs.kubo import KuboError

__all__ = ["AudioCache", "AudioMismatch", "AudioUnavailable"]


class AudioUnavailable(Exception):
    """IPFS did not give the file (retry later)."""


class AudioMismatch(Exception):
    """IPFS gave bytes whose hash is not the registered one."""


KEEP_RECENT_S = 60.0


class Cat(Protocol):
    def cat_iter(self, cid: str) -> AsyncIterator[bytes]: ...


class AudioCache:
    def __init__(self, kubo: Cat, directory: Path, max_bytes: int = 2048 * 2**20) -> None:
        self._kubo = kubo
        self._dir = directory
        self._max_bytes = max_bytes
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def path(self, cid: str, audio_hash: str, fmt: str) -> Path:
        target = self._dir / f"{cid}.{fmt}"
        if _touch(target):
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
        self._evict(keep=target)
        return target

    def _evict(self, keep: Path) -> None:
        files = []
        for path in self._dir.iterdir():
            if path.suffix in (".mp3", ".wav", ".flac"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                files.append((st.st_atime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        recent = time.time() - KEEP_RECENT_S
        for served, size, path in sorted(files):  # least recently served first
            if total <= self._max_bytes or served > recent:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _touch(path: Path) -> bool:
    """Mark a cached file as just served (its access time orders eviction; its modification
    time stays); whether it exists."""
    try:
        os.utime(path, (time.time(), path.stat().st_mtime))
    except FileNotFoundError:
        return False
    return True
