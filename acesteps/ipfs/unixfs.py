"""The CID Kubo gives a file, computed locally.

The publisher pins audio with ``ipfs add`` and must not trust the CID the node answers: it
recomputes it here and compares. The parameters are fixed and passed explicitly to Kubo
(`acesteps.ipfs.kubo.ADD_PARAMS`): CIDv1, sha2-256, fixed-size chunks of 256 KiB, raw
leaves, balanced layout with at most 174 links per node (boxo's ``importer/balanced``).

The DAG of a file:

1. The bytes are cut into chunks of `CHUNK_SIZE`; each chunk is a *raw* block (codec 0x55)
   holding exactly those bytes. A file of one chunk is that raw block alone, and so is the
   empty file (a raw block of zero bytes: boxo makes a leaf of no data).
2. Otherwise leaves are grouped, in order, by `MAX_LINKS` under *dag-pb* parents
   (codec 0x70); those parents are grouped the same way, level by level, until one node
   remains: the root. Every leaf is at the same depth, and the last node of a level may have
   a single child (boxo never collapses it). This is exactly the shape boxo's recursive
   ``layoutData``/``fillNodeRec`` builds top-down; building it bottom-up lets us stream.
3. A parent is a PBNode in canonical order, ``Links`` (field 2) before ``Data`` (field 1).
   Each PBLink has ``Hash`` (the child's binary CID), ``Name`` present and empty (boxo calls
   ``AddNodeLink("", child)``, so the encoding carries ``12 00``) and ``Tsize``, the
   cumulative size of the child's blocks. ``Data`` is a UnixFS message: ``Type`` = File (2),
   ``filesize`` and one ``blocksizes`` entry per child (file bytes under it), unpacked.

Kubo's ``Import.UnixFSPBNodeFieldOrder = "data-first"`` (IPIP-550) would put Data first and
change every multi-chunk CID; it is a node setting with no ``add`` parameter, so the node
must keep its default (``links-first``).
"""

from __future__ import annotations

import hashlib
from base64 import b32encode
from collections.abc import Callable
from typing import Final

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "CidBuilder",
    "cid_of_bytes",
    "cid_to_str",
    "keccak_block_cid",
    "varint",
]

CHUNK_SIZE: Final = 256 * 1024
MAX_LINKS: Final = 174  # boxo's helpers.DefaultLinksPerBlock: 8 KiB / 47 B per link

_RAW: Final = 0x55
_DAG_PB: Final = 0x70
_SHA2_256: Final = 0x12
_KECCAK_256: Final = 0x1B
_UNIXFS_FILE: Final = 2

# (binary CID, Tsize = bytes of all blocks under it, file bytes under it)
_Node = tuple[bytes, int, int]
BlockSink = Callable[[bytes, bytes], None]
"""Called with (binary CID, block bytes) for every block, children before parents."""


def varint(n: int) -> bytes:
    """Unsigned LEB128, the integer encoding of protobuf and multiformats."""
    if not 0 <= n < 1 << 64:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_varint(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)  # wire type 0


def _pb_bytes(field: int, value: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(value)) + value  # wire type 2


def _cid(codec: int, block: bytes | bytearray | memoryview) -> bytes:
    digest = hashlib.sha256(block).digest()
    return b"\x01" + varint(codec) + bytes((_SHA2_256, len(digest))) + digest


def cid_to_str(cid: bytes) -> str:
    """The text form of a binary CIDv1: multibase base32 lower case, prefix ``b``."""
    return "b" + b32encode(cid).decode("ascii").lower().rstrip("=")


class CidBuilder:
    """Streams a file's bytes in and gives its CID, holding less than one chunk of them.

    ``chunk_size`` and ``max_links`` exist so tests can build deep trees from a few bytes;
    only the defaults match what `acesteps.ipfs.kubo.KuboClient.add` asks of Kubo.
    """

    def __init__(
        self,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_links: int = MAX_LINKS,
        on_block: BlockSink | None = None,
    ) -> None:
        if chunk_size < 1 or max_links < 2:
            raise ValueError("chunk_size must be >= 1 and max_links >= 2")
        self._chunk_size = chunk_size
        self._max_links = max_links
        self._on_block = on_block
        self._buf = bytearray()
        # _levels[0] holds leaves not yet under a parent, _levels[1] their parents, ...
        # A level is flushed into one parent as soon as it holds max_links nodes: the
        # grouping is the same whether or not more data follows.
        self._levels: list[list[_Node]] = [[]]
        self._leaves = 0
        self._root: _Node | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to the file; full chunks are hashed at once and not kept."""
        if self._root is not None:
            raise RuntimeError("update() after finish()")
        view = memoryview(data).cast("B")
        if self._buf:
            take = self._chunk_size - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < self._chunk_size:
                return
            self._add_leaf(self._buf)
            self._buf.clear()
        while len(view) >= self._chunk_size:
            self._add_leaf(view[: self._chunk_size])
            view = view[self._chunk_size :]
        self._buf += view

    def finish(self) -> str:
        """The file's CID (idempotent); no more bytes may follow."""
        if self._root is None:
            if self._buf or not self._leaves:
                self._add_leaf(self._buf)  # the last, short chunk; or the empty file's leaf
            # Group what is left of each level, bottom up, until one node is on top.
            level = 0
            while level < len(self._levels) - 1 or len(self._levels[level]) > 1:
                if self._levels[level]:
                    self._add_parent(level)
                level += 1
            self._root = self._levels[-1][0]
        return cid_to_str(self._root[0])

    @property
    def dag_size(self) -> int:
        """Bytes of all blocks of the DAG (Kubo's ``Size``); valid after `finish`."""
        if self._root is None:
            raise RuntimeError("dag_size before finish()")
        return self._root[1]

    def _add_leaf(self, chunk: bytes | bytearray | memoryview) -> None:
        cid = _cid(_RAW, chunk)
        if self._on_block is not None:
            self._on_block(cid, bytes(chunk))
        self._leaves += 1
        self._push(0, (cid, len(chunk), len(chunk)))

    def _push(self, level: int, node: _Node) -> None:
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append(node)
        if len(self._levels[level]) == self._max_links:
            self._add_parent(level)

    def _add_parent(self, level: int) -> None:
        """Replaces the nodes waiting at ``level`` with one parent at ``level + 1``."""
        children, self._levels[level] = self._levels[level], []
        links = b"".join(
            _pb_bytes(2, _pb_bytes(1, cid) + _pb_bytes(2, b"") + _pb_varint(3, tsize))
            for cid, tsize, _ in children
        )
        filesize = sum(size for _, _, size in children)
        unixfs = _pb_varint(1, _UNIXFS_FILE) + _pb_varint(3, filesize)
        unixfs += b"".join(_pb_varint(4, size) for _, _, size in children)
        block = links + _pb_bytes(1, unixfs)
        cid = _cid(_DAG_PB, block)
        if self._on_block is not None:
            self._on_block(cid, block)
        self._push(level + 1, (cid, len(block) + sum(t for _, t, _ in children), filesize))


def cid_of_bytes(data: bytes | bytearray | memoryview) -> str:
    """The CID of a whole file in memory (see the module docstring for the parameters)."""
    builder = CidBuilder()
    builder.update(data)
    return builder.finish()


def keccak_block_cid(digest: bytes) -> str:
    """The CID of one raw block whose keccak256 is ``digest``: CIDv1, raw, keccak-256.

    The registry names generation manifests this way, so a manifest's CID is its
    ``manifestHash`` in another spelling (`acesteps.ipfs.kubo.KuboClient.block_put`)."""
    if len(digest) != 32:
        raise ValueError("a keccak256 digest is 32 bytes")
    return cid_to_str(b"\x01" + varint(_RAW) + bytes((_KECCAK_256, 32)) + digest)
