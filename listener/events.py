"""Turning a ``GenerationRequested`` log into a request record, or into a failure.

Every log from the configured contract becomes exactly one record: a `GenerationRequest`
for ``PREFIX.requests.v1`` when it is valid, else a `GenerationFailed` (stage ``listener``)
for ``PREFIX.failures.v1`` that says why. The strings are decoded as bytes and then as UTF-8
ourselves: the contract takes ``string calldata`` and Solidity never checks UTF-8, so a raw
call can emit any bytes.
"""

from __future__ import annotations

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from pydantic import ValidationError
from web3 import AsyncWeb3

from acesteps.messages import ChainOrigin, GenerationFailed, GenerationRequest
from listener.chainreader import RawLog

__all__ = ["from_log"]


def _failed(request_id: str, origin: ChainOrigin, code: str, message: str) -> GenerationFailed:
    return GenerationFailed(
        request_id=request_id,
        stage="listener",
        code=code,
        message=message[:4000],
        source="chain",
        chain=origin,
    )


def _utf8(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{field} is not valid UTF-8 (byte {exc.start})") from None


def _explain(exc: ValidationError) -> str:
    names = {"duration_s": "durationSeconds"}
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{names.get(field, field)}: {err['msg']}")
    return "; ".join(parts)


def from_log(log: RawLog, chain_id: int) -> GenerationRequest | GenerationFailed | None:
    """The record for one log; None only for a log that carries no request id at all."""
    if len(log.topics) != 3:
        return None
    request_id = log.topics[1]
    origin = ChainOrigin(
        chain_id=chain_id,
        contract=AsyncWeb3.to_checksum_address(log.address),
        block_number=log.block_number,
        block_hash=log.block_hash,
        tx_hash=log.tx_hash,
        log_index=log.log_index,
    )
    try:
        prompt_raw, lyrics_raw, duration = abi_decode(["bytes", "bytes", "uint32"], log.data)
    except (DecodingError, OverflowError, ValueError) as exc:
        return _failed(request_id, origin, "undecodable_event", f"event data: {exc}")
    try:
        prompt = _utf8(prompt_raw, "prompt")
        lyrics = _utf8(lyrics_raw, "lyrics")
    except ValueError as exc:
        return _failed(request_id, origin, "invalid_utf8", str(exc))
    try:
        return GenerationRequest(
            request_id=request_id,
            source="chain",
            prompt=prompt,
            lyrics=lyrics,
            duration_s=duration,
            requester=AsyncWeb3.to_checksum_address("0x" + log.topics[2][-40:]),
            chain=origin,
        )
    except ValidationError as exc:
        return _failed(request_id, origin, "invalid_request", _explain(exc))
