"""Decoding revert data: which custom error of the ABI (or Error/Panic) a call reverted with."""

from __future__ import annotations

from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

__all__ = ["decode_revert"]


def decode_revert(abi: Any, data: object) -> tuple[str, tuple[object, ...]]:
    """(name, arguments) of the error in revert ``data`` (0x-hex), matched by selector.

    Solidity's ``Error(string)`` and ``Panic(uint256)`` come out as ``Error`` and ``Panic``;
    data that matches nothing (or no data) as ``unknown``.
    """
    if not isinstance(data, str | bytes) or not data:
        return "unknown", ()
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    selector, body = raw[:4], raw[4:]
    candidates: list[tuple[str, list[str]]] = [("Error", ["string"]), ("Panic", ["uint256"])]
    candidates += [
        (item["name"], [_canonical(i) for i in item.get("inputs", [])])
        for item in abi or []
        if item.get("type") == "error"
    ]
    for name, types in candidates:
        if keccak(text=f"{name}({','.join(types)})")[:4] == selector:
            try:
                return name, tuple(abi_decode(types, body))
            except Exception:  # arguments that do not decode: the name is still right
                return name, ()
    return "unknown", ("0x" + raw.hex(),)


def _canonical(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in param.get("components", []))
        return f"({inner}){kind[len('tuple') :]}"
    return kind
