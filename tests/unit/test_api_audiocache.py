"""The API's audio cache: fetched once, hash-checked, kept under its size (fakes for IPFS)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboUnavailable
from listener.api.audiocache import AudioCache, AudioMismatch, AudioUnavailable


class FakeIpfs:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []
        self.down = False

    async def cat_iter(self, cid: str) -> AsyncIterator[bytes]:
        self.fetched.append(cid)
        if self.down:
            raise KuboUnavailable("connection refused")
        data = self.files[cid]
        for i in range(0, len(data), 1000):
            await asyncio.sleep(0)
            yield data[i : i + 1000]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def files(n: int, size: int) -> dict[str, bytes]:
    return {f"bafk{i}": os.urandom(size) for i in range(n)}


async def test_a_file_is_fetched_once_and_served_from_disk(tmp_path: Path) -> None:
    ipfs = FakeIpfs(files(1, 5000))
    cache = AudioCache(ipfs, tmp_path)
    data = ipfs.files["bafk0"]
    paths = await asyncio.gather(
        *(cache.path("bafk0", keccak256_hex(data), "mp3") for _ in range(5))
    )
    assert {p.read_bytes() for p in paths} == {data}
    assert ipfs.fetched == ["bafk0"]  # five at once, one fetch


async def test_bytes_that_do_not_match_are_never_kept(tmp_path: Path) -> None:
    ipfs = FakeIpfs(files(1, 5000))
    cache = AudioCache(ipfs, tmp_path)
    with pytest.raises(AudioMismatch):
        await cache.path("bafk0", "0x" + "00" * 32, "mp3")
    assert listing(tmp_path) == []
    ipfs.down = True
    with pytest.raises(AudioUnavailable):
        await cache.path("bafk0", keccak256_hex(ipfs.files["bafk0"]), "mp3")
    assert listing(tmp_path) == []


async def test_the_least_recently_served_files_are_evicted_first(tmp_path: Path) -> None:
    ipfs = FakeIpfs(files(4, 10_000))
    cache = AudioCache(ipfs, tmp_path, max_bytes=25_000)
    long_ago = time.time() - 3600

    async def get(cid: str) -> Path:
        return await cache.path(cid, keccak256_hex(ipfs.files[cid]), "wav")

    for cid in ("bafk0", "bafk1"):
        os.utime(await get(cid), (long_ago, long_ago))
    await get("bafk0")  # served again: now the most recent of the two
    await get("bafk2")  # 30,000 bytes > 25,000: the least recently served goes
    assert listing(tmp_path) == ["bafk0.wav", "bafk2.wav"]
    await get("bafk3")  # over again, but what is left was served within the minute
    assert listing(tmp_path) == ["bafk0.wav", "bafk2.wav", "bafk3.wav"]
