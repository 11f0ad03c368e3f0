"""The local CID computation (acesteps.ipfs.unixfs) and keccak256 (acesteps.hashing).

Golden CIDs were answered by Kubo 0.43.1 (``add --only-hash`` with the client's parameters);
the layout is also checked against a direct port of boxo's recursive balanced builder, on
tiny chunks so that deep trees cost a few bytes.
"""

from __future__ import annotations

import hashlib
import random
from base64 import b32decode, b32encode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acesteps.hashing import Keccak256, keccak256, keccak256_hex
from acesteps.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, CidBuilder, cid_of_bytes, varint

KIB = 1024

# ------------------------------------------------------------------ helpers


def _raw_cid(data: bytes) -> str:
    """CIDv1 raw sha2-256 of ``data``, written out from the multiformats specs."""
    binary = b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()
    return "b" + b32encode(binary).decode().lower().rstrip("=")


def _binary(cid: str) -> bytes:
    body = cid[1:].upper()
    return b32decode(body + "=" * (-len(body) % 8))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field number, value) in wire order."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        value: int | bytes
        if key & 7 == 0:
            value, pos = _read_varint(buf, pos)
        else:
            assert key & 7 == 2, f"unexpected wire type {key & 7}"
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        out.append((key >> 3, value))
    return out


Shape = bytes | list["Shape"]  # a leaf's bytes, or a parent's children


def _decode(root: str, blocks: dict[bytes, bytes]) -> tuple[Shape, int, int]:
    """Walks the DAG from ``root``; returns (shape, Tsize, file size) and checks every node."""

    def walk(cid: bytes) -> tuple[Shape, int, int]:
        block = blocks[cid]
        assert hashlib.sha256(block).digest() == cid[4:]
        if cid[1] == 0x55:
            return block, len(block), len(block)
        assert cid[1] == 0x70
        fields = _fields(block)
        assert [f for f, _ in fields] == [2] * (len(fields) - 1) + [1], "Links before Data"
        children: list[Shape] = []
        tsize = len(block)
        sizes = []
        for _, link in fields[:-1]:
            assert isinstance(link, bytes)
            match _fields(link):  # Hash, Name (present and empty), Tsize
                case [(1, bytes() as child_cid), (2, b""), (3, int() as link_tsize)]:
                    pass
                case other:
                    pytest.fail(f"unexpected PBLink {other}")
            child, child_tsize, child_size = walk(child_cid)
            assert link_tsize == child_tsize
            children.append(child)
            tsize += child_tsize
            sizes.append(child_size)
        data = fields[-1][1]
        assert isinstance(data, bytes)
        assert _fields(data) == [(1, 2), (3, sum(sizes))] + [(4, s) for s in sizes]
        return children, tsize, sum(sizes)

    return walk(_binary(root))


def _boxo_shape(data: bytes, chunk_size: int, max_links: int) -> Shape:
    """A port of boxo's importer/balanced Layout, layoutData and fillNodeRec."""
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    chunks.reverse()  # pop() takes the next chunk

    def fill(node: list[Shape], depth: int) -> list[Shape]:
        while len(node) < max_links and chunks:
            node.append(chunks.pop() if depth == 1 else fill([], depth - 1))
        return node

    if not chunks:
        return b""
    root: Shape = chunks.pop()
    depth = 1
    while chunks:
        root = fill([root], depth)
        depth += 1
    return root


def _collecting_builder(**kwargs: int) -> tuple[CidBuilder, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}
    return CidBuilder(on_block=blocks.__setitem__, **kwargs), blocks


# ------------------------------------------------------------------ varint


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (CHUNK_SIZE, b"\x80\x80\x10"),
        (2**63, b"\x80" * 9 + b"\x01"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded
    assert _read_varint(encoded, 0) == (value, len(encoded))


@pytest.mark.parametrize("value", [-1, 2**64])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        varint(value)


# ------------------------------------------------------------------ CIDs


def test_empty_file_is_the_empty_raw_leaf() -> None:
    assert cid_of_bytes(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert cid_of_bytes(b"") == _raw_cid(b"")


@pytest.mark.parametrize("size", [1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE])
def test_one_chunk_file_is_its_raw_leaf(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert cid_of_bytes(data) == _raw_cid(data)


def test_two_chunks_make_a_dag_pb_root() -> None:
    data = random.Random(7).randbytes(CHUNK_SIZE + 1)
    builder, blocks = _collecting_builder()
    builder.update(data)
    cid = builder.finish()
    assert cid.startswith("bafybei")  # dag-pb, sha2-256
    shape, tsize, size = _decode(cid, blocks)
    assert shape == [data[:CHUNK_SIZE], data[CHUNK_SIZE:]]
    assert (tsize, size) == (builder.dag_size, len(data))


@pytest.mark.parametrize(
    ("data", "cid", "dag_size"),
    [
        pytest.param(
            (bytes(range(251)) * 4000)[:1_000_000],
            "bafybeibx62obrkybp46hx3ivh53q4rnptgkunpgtwiib5lfelfgt2ekihm",
            1000208,
            id="4-chunks",
        ),
        pytest.param(
            b"\x01" * (MAX_LINKS * CHUNK_SIZE),
            "bafybeifmlomojm7oanckis3z4s6iwb7mf4xqhisocspevz4qzwmksgyifq",
            45621766,
            id="174-chunks-one-level",
        ),
        pytest.param(
            b"\x00" * (175 * CHUNK_SIZE + 1),
            "bafybeicyowx3udu4hzfyo2ekfduhsfhirbv5j2uhcuyz4zh53vrbx2jdfa",
            45884126,
            id="176-chunks-two-levels",
        ),
    ],
)
def test_golden_cids_from_kubo(data: bytes, cid: str, dag_size: int) -> None:
    builder = CidBuilder()
    builder.update(data)
    assert builder.finish() == cid
    assert builder.dag_size == dag_size


def test_two_level_tree_structure() -> None:
    """176 chunks: a root over a full node of 174 leaves and a node of 2."""
    data = random.Random(176).randbytes(175 * CHUNK_SIZE + 1)
    builder, blocks = _collecting_builder()
    builder.update(data)
    shape, _, size = _decode(builder.finish(), blocks)
    assert size == len(data)
    assert isinstance(shape, list)
    assert [len(child) for child in shape] == [MAX_LINKS, 2]
    leaves = [leaf for child in shape for leaf in child]
    assert all(isinstance(leaf, bytes) for leaf in leaves)
    assert b"".join(leaves) == data  # type: ignore[arg-type]
    assert sum(cid[1] == 0x70 for cid in blocks) == 3  # dag-pb parents
    assert len(blocks) == 176 + 3


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600),
    chunk_size=st.integers(1, 8),
    max_links=st.integers(2, 5),
)
def test_layout_matches_boxo_balanced_builder(data: bytes, chunk_size: int, max_links: int) -> None:
    builder, blocks = _collecting_builder(chunk_size=chunk_size, max_links=max_links)
    builder.update(data)
    shape, tsize, size = _decode(builder.finish(), blocks)
    assert shape == _boxo_shape(data, chunk_size, max_links)
    assert (tsize, size) == (builder.dag_size, len(data))


@settings(max_examples=50, deadline=None)
@given(data=st.data(), size=st.integers(0, 3 * CHUNK_SIZE + 10))
def test_streaming_equals_one_shot(data: st.DataObject, size: int) -> None:
    content = random.Random(size).randbytes(size)
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=12)))
    builder = CidBuilder()
    for start, end in zip([0, *cuts], [*cuts, size], strict=True):
        builder.update(content[start:end])  # includes empty pieces
    assert builder.finish() == cid_of_bytes(content)


def test_finish_is_final() -> None:
    builder = CidBuilder()
    builder.update(b"abc")
    assert builder.finish() == builder.finish() == _raw_cid(b"abc")
    with pytest.raises(RuntimeError):
        builder.update(b"d")


# ------------------------------------------------------------------ keccak256


def test_keccak256_known_vectors() -> None:
    empty = "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256_hex(b"") == empty
    assert keccak256(b"") == bytes.fromhex(empty[2:])
    # keccak256, not NIST SHA3-256 (which starts a7ffc6f8...)
    assert keccak256_hex(b"abc") == (
        "0x4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )
    assert Keccak256().hexdigest() == empty


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.binary(max_size=300), max_size=10))
def test_keccak256_streaming_equals_one_shot(pieces: list[bytes]) -> None:
    hasher = Keccak256()
    for piece in pieces:
        hasher.update(memoryview(piece))
    whole = b"".join(pieces)
    assert hasher.digest() == keccak256(whole)
    assert hasher.hexdigest() == keccak256_hex(whole)
    hasher.update(b"x")  # digest() did not end the stream
    assert hasher.digest() == keccak256(whole + b"x")
