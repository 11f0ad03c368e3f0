"""The value types every surface shares: request ids, hashes, addresses, CIDs, audio formats.

One definition each, used by the topic messages, the HTTP API, the CLI and the contract
wrapper. A request id is a bytes32 written ``0x`` + 64 lowercase hex digits everywhere it is
stored or sent; where a person types one (a URL, the CLI) any case is accepted and
`parse_request_id` lower-cases it.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, get_args

from pydantic import StringConstraints

__all__ = [
    "ADDRESS_PATTERN",
    "AUDIO_FORMATS",
    "MEDIA_TYPES",
    "REQUEST_ID_INPUT",
    "Address",
    "AudioFormat",
    "Bytes32Hex",
    "Cid",
    "RequestId",
    "Source",
    "parse_request_id",
    "to_bytes32",
    "to_hex",
]

BYTES32_PATTERN: Final = r"^0x[0-9a-f]{64}$"
REQUEST_ID_INPUT: Final = r"^0x[0-9a-fA-F]{64}$"
"""A request id as a person may type it (any case); `parse_request_id` normalises it."""

Bytes32Hex = Annotated[str, StringConstraints(pattern=BYTES32_PATTERN)]
"""A bytes32 written 0x + 64 lowercase hex digits (request ids, audio hashes)."""
RequestId = Bytes32Hex
ADDRESS_PATTERN: Final = r"^0x[0-9a-fA-F]{40}$"
Address = Annotated[str, StringConstraints(pattern=ADDRESS_PATTERN)]
Cid = Annotated[str, StringConstraints(pattern=r"^b[a-z2-7]{20,200}$")]
"""A CIDv1 in base32 (Kubo's default text form for CIDv1)."""

AudioFormat = Literal["mp3", "wav", "flac"]
Source = Literal["chain", "http"]
"""Where a request came from: a ``GenerationRequested`` event, or the HTTP API."""
AUDIO_FORMATS: Final[tuple[str, ...]] = get_args(AudioFormat)
MEDIA_TYPES: Final[dict[str, str]] = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}
"""The media type of each audio format."""

_REQUEST_ID_INPUT: Final = re.compile(REQUEST_ID_INPUT)


def parse_request_id(text: str) -> str | None:
    """``text`` as a canonical request id, or None when it is not one."""
    # fullmatch: with match and "$", a trailing newline would pass.
    return text.lower() if _REQUEST_ID_INPUT.fullmatch(text) else None


def to_hex(value: object) -> str:
    """Bytes or a hex string (web3's HexBytes, ``0x``-prefixed or not) as ``0x`` + lowercase."""
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return "0x" + text.lower().removeprefix("0x")


def to_bytes32(value: str | bytes) -> bytes:
    """A request id or hash (``0x`` hex or raw) as the 32 bytes the contract takes."""
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw
