"""The options of an on-chain request: ``requestGenerationWithOptions``'s ``Options`` struct.

The contract emits ``RequestOptions(requestId, abi.encode(options))`` right after the request's
``GenerationRequested``; the listener decodes it here into the request fields of
`acesteps.options.GenerationOptions`, which then validate them as they validate an HTTP
request. A zero value means "not asked" (the service's default), so the struct needs no
optional types:

========================  ===================  =====================================
struct field              zero value           request field
========================  ===================  =====================================
``bool hasSeed``,         ``false``            ``seed`` (from the request id)
``uint32 seed``
``string format``         ``""``               ``format`` (mp3)
``uint16 bpm``            ``0``                ``bpm``
``string key``            ``""``               ``key``
``uint8 timeSignature``   ``0``                ``time_signature``
``string vocalLanguage``  ``""``               ``vocal_language``
``bool instrumental``     ``false``            ``instrumental``
``string[] tags``         ``[]``               ``tags``
``string model``          ``""``               ``model`` (the operator's default)
``string preset``         ``""``               ``preset`` (none; since contract 1.3.0)
``uint8 variations``      ``0`` (or ``1``)     ``variations`` (one track; since 1.3.0)
========================  ===================  =====================================

Strings are decoded as bytes and then as UTF-8 here: Solidity never checks UTF-8. The
options of a 1.2.0 deployment (the struct without ``preset`` and ``variations``) decode too,
as asking neither.

A request whose ``variations`` is n > 1 is followed, in its transaction, by its n - 1
variations, which the contract makes (`acesteps.variations`): each its own
``GenerationRequested`` and ``RequestOptions`` (the parent's options with ``variations`` 0
and the variation's seed), then a ``VariationRequested(requestId, parentId, index)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

__all__ = [
    "OPTIONS_TYPE",
    "STRUCT_NAMES",
    "InvalidUtf8",
    "decode_options",
    "encode_options",
    "utf8",
]

OPTIONS_TYPE: Final = (
    "(bool,uint32,string,uint16,string,uint8,string,bool,string[],string,string,uint8)"
)
_RAW_TYPE: Final = "(bool,uint32,bytes,uint16,bytes,uint8,bytes,bool,bytes[],bytes,bytes,uint8)"
_RAW_TYPE_1_2: Final = "(bool,uint32,bytes,uint16,bytes,uint8,bytes,bool,bytes[],bytes)"
"""The struct of contract 1.2.0, before ``preset`` and ``variations``: what a deployment of
that version emits."""
MAX_OPTIONS_BYTES: Final = 16 * 1024
"""Larger options cannot be a valid request (16 tags of 48 characters and short strings)."""

STRUCT_NAMES: Final = {
    "seed": "seed",
    "format": "format",
    "bpm": "bpm",
    "key": "key",
    "time_signature": "timeSignature",
    "vocal_language": "vocalLanguage",
    "instrumental": "instrumental",
    "tags": "tags",
    "model": "model",
    "preset": "preset",
    "variations": "variations",
}
"""Request field -> the struct field that carries it (for reasons a requester can read)."""


def encode_options(
    *,
    seed: int | None = None,
    format: str = "",
    bpm: int | None = None,
    key: str = "",
    time_signature: int | None = None,
    vocal_language: str = "",
    instrumental: bool = False,
    tags: Sequence[str] = (),
    model: str = "",
    preset: str = "",
    variations: int | None = None,
) -> tuple[Any, ...]:
    """The ``Options`` tuple of what a request asks (what a client passes to the contract)."""
    return (
        seed is not None,
        seed or 0,
        format,
        bpm or 0,
        key,
        time_signature or 0,
        vocal_language,
        instrumental,
        list(tags),
        model,
        preset,
        variations or 0,
    )


def decode_options(data: bytes) -> dict[str, object]:
    """The request fields that ``abi.encode(options)`` asks for (zero values left out);
    ValueError saying what is wrong with bytes that are not such an encoding, or with a
    string that is not UTF-8."""
    if len(data) > MAX_OPTIONS_BYTES:
        raise ValueError(f"options of {len(data)} bytes (at most {MAX_OPTIONS_BYTES})")
    try:
        raw = _exactly(_RAW_TYPE, data)
    except ValueError as exc:
        try:  # a 1.2.0 deployment's: no preset, no variations
            raw = (*_exactly(_RAW_TYPE_1_2, data), b"", 0)
        except ValueError:
            raise exc from None
    has_seed, seed, fmt, bpm, key, signature, language, instrumental, tags, model, preset, n = raw
    asked: dict[str, object] = {}
    if has_seed:
        asked["seed"] = seed
    for name, value in (
        ("format", fmt),
        ("key", key),
        ("vocal_language", language),
        ("model", model),
        ("preset", preset),
    ):
        if value:
            asked[name] = utf8(value, STRUCT_NAMES[name])
    if bpm:
        asked["bpm"] = bpm
    if signature:
        asked["time_signature"] = signature
    if instrumental:
        asked["instrumental"] = True
    if tags:
        asked["tags"] = tuple(utf8(tag, f"tags[{i}]") for i, tag in enumerate(tags))
    if n > 1:  # 0 and 1: one track, what every request makes
        asked["variations"] = n
    return asked


def _exactly(raw_type: str, data: bytes) -> tuple[Any, ...]:
    """``data`` decoded as ``raw_type``, which must be exactly what ``abi.encode`` makes of
    the values (so the struct of one version never reads as another's)."""
    try:
        (raw,) = abi_decode([raw_type], data)
    except Exception as exc:  # eth_abi raises many types for malformed data
        raise ValueError(f"options are not an ABI-encoded Options struct ({exc})") from None
    again = abi_encode([raw_type], [raw])
    if len(again) < len(data):
        raise ValueError("options carry bytes after the Options struct")
    if again != data:
        raise ValueError("options are not abi.encode of an Options struct")
    return tuple(raw)


class InvalidUtf8(ValueError):
    """A string of a chain request that is not UTF-8."""


def utf8(raw: bytes, field: str) -> str:
    """``raw`` as text; `InvalidUtf8` naming ``field`` and the first bad byte otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidUtf8(f"{field} is not valid UTF-8 (byte {exc.start})") from None
