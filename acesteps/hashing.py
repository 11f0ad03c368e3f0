"""keccak256, Ethereum's hash: the ``audioHash`` of a track and HTTP request ids.

One-shot hashing goes through ``eth_hash.auto.keccak``, the implementation web3 uses, so the
service and the chain tooling agree by construction.

`Keccak256` (streaming) uses pycryptodome's keccak directly. eth-hash 0.8 offers
``keccak.new(b"")`` preimage objects, but its pycryptodome backend appends every chunk given
to ``update()`` to a list (to support ``copy()``), so hashing a file chunk by chunk through
it would keep the whole file alive. pycryptodome's own object holds only the sponge state.
"""

from __future__ import annotations

from Crypto.Hash import keccak as _keccak
from eth_hash.auto import keccak as _eth_keccak

__all__ = ["Keccak256", "keccak256", "keccak256_hex"]

Buffer = bytes | bytearray | memoryview


def keccak256(data: bytes | bytearray) -> bytes:
    """The 32-byte keccak256 digest of ``data``."""
    return _eth_keccak(data)


def keccak256_hex(data: bytes | bytearray) -> str:
    """keccak256 of ``data`` as ``0x`` + 64 lower-case hex digits, as the contract writes it."""
    return "0x" + keccak256(data).hex()


class Keccak256:
    """Incremental keccak256 in constant memory: ``update()`` chunks, then ``digest()``.

    ``digest()`` may be called more than once, and more data may follow it.
    """

    __slots__ = ("_state",)

    def __init__(self, data: Buffer = b"") -> None:
        self._state = _keccak.new(data=data, digest_bits=256, update_after_digest=True)

    def update(self, data: Buffer) -> None:
        """Absorb more bytes."""
        self._state.update(data)

    def digest(self) -> bytes:
        """The 32-byte digest of everything absorbed so far."""
        return self._state.digest()

    def hexdigest(self) -> str:
        """The digest as ``0x`` + 64 lower-case hex digits."""
        return "0x" + self.digest().hex()
