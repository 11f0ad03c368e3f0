"""KuboClient against the real Kubo of the local stack, and the local CID against Kubo's.

The stack's Kubo runs ``--offline``: a block it does not hold is answered at once as "not
found" instead of being searched for on the network, which the tests below rely on.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from acesteps.ipfs.kubo import KuboClient, KuboRequestError, KuboUnavailable
from acesteps.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, CidBuilder, cid_of_bytes
from acesteps.settings import CommonSettings

MB = 1000 * 1000


@pytest.fixture
async def kubo(stack: CommonSettings) -> AsyncIterator[KuboClient]:
    async with KuboClient(stack.ipfs_api_url, timeout_s=stack.ipfs_timeout_s) as client:
        yield client


def _random_bytes(size: int) -> bytes:
    """Reproducible content; tests that assert a CID is *not* pinned use os.urandom."""
    return random.Random(size).randbytes(size)


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_version(kubo: KuboClient) -> None:
    assert (await kubo.version()).split(".")[:2] == ["0", "43"]


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10 * MB, 50 * MB],
    ids=["0B", "1B", "256KiB", "256KiB+1", "10MB", "50MB"],
)
async def test_add_gives_the_local_cid_and_cat_the_bytes(kubo: KuboClient, size: int) -> None:
    data = _random_bytes(size)
    local = CidBuilder()
    local.update(data)

    result = await kubo.add(data)

    assert result.cid == local.finish()
    assert result.size == local.dag_size
    assert await kubo.pin_ls(result.cid)
    assert await kubo.cat(result.cid) == data


async def test_50mb_tree_is_deeper_than_one_level() -> None:
    data = _random_bytes(50 * MB)
    assert len(data) > MAX_LINKS * CHUNK_SIZE
    blocks: list[bytes] = []
    builder = CidBuilder(on_block=lambda cid, _: blocks.append(cid))
    builder.update(data)
    builder.finish()
    parents = [cid for cid in blocks if cid[1] == 0x70]  # dag-pb
    assert len(parents) == 3  # two nodes over the leaves, and the root over them


async def test_streamed_upload_equals_bytes_upload(kubo: KuboClient) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 12345)  # fresh: never pinned before
    streamed = await kubo.add(_pieces(data, 100_000), pin=False)
    assert streamed.cid == cid_of_bytes(data)
    assert not await kubo.pin_ls(streamed.cid)


async def test_cat_iter_yields_bounded_pieces(kubo: KuboClient) -> None:
    data = _random_bytes(CHUNK_SIZE * 2 + 7)
    cid = (await kubo.add(data)).cid
    pieces = [piece async for piece in kubo.cat_iter(cid, chunk_size=64 * 1024)]
    assert all(0 < len(piece) <= 64 * 1024 for piece in pieces)
    assert b"".join(pieces) == data


async def test_only_hash_stores_nothing(kubo: KuboClient) -> None:
    data = os.urandom(CHUNK_SIZE + 100)
    result = await kubo.add(data, only_hash=True)
    assert result.cid == cid_of_bytes(data)
    assert not await kubo.pin_ls(result.cid)
    with pytest.raises(KuboRequestError, match="not found"):
        await kubo.cat(result.cid)


async def test_pin_add_then_pin_ls(kubo: KuboClient) -> None:
    cid = (await kubo.add(os.urandom(1000), pin=False)).cid
    assert not await kubo.pin_ls(cid)
    await kubo.pin_add(cid)
    assert await kubo.pin_ls(cid)


async def test_unknown_cid_is_not_pinned(kubo: KuboClient) -> None:
    assert not await kubo.pin_ls(cid_of_bytes(os.urandom(32)))


async def test_wrong_argument_is_a_request_error(kubo: KuboClient) -> None:
    # Kubo answers this with HTTP 500 and its JSON error body: still permanent.
    with pytest.raises(KuboRequestError, match="invalid path") as caught:
        await kubo.cat("not-a-cid")
    assert caught.value.status == 500
    with pytest.raises(KuboRequestError):
        await kubo.pin_ls("not-a-cid")


async def test_missing_block_mid_stream_is_detected(
    kubo: KuboClient, stack: CommonSettings
) -> None:
    """Kubo answers 200 and cuts the body; the error only travels in a trailer."""
    data = os.urandom(3 * CHUNK_SIZE)
    cid = (await kubo.add(data, pin=False)).cid
    second_leaf = cid_of_bytes(data[CHUNK_SIZE : 2 * CHUNK_SIZE])
    async with aiohttp.ClientSession() as session:
        url = f"{stack.ipfs_api_url}/api/v0/block/rm"
        async with session.post(url, params={"arg": second_leaf}) as resp:
            assert "Error" not in await resp.json(content_type=None)
    with pytest.raises(KuboUnavailable, match=f"of {len(data)} bytes"):
        await kubo.cat(cid)


async def test_unreachable_node_is_unavailable() -> None:
    async with KuboClient("http://127.0.0.1:1", timeout_s=5) as client:
        with pytest.raises(KuboUnavailable):
            await client.version()
