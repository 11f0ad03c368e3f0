"""Turning the contract's logs into records.

Every ``GenerationRequested`` log from the configured contract becomes exactly one record: a
`GenerationRequest` for ``PREFIX.requests.v1`` when it is valid, else a `GenerationFailed`
(stage ``listener``) for ``PREFIX.failures.v1`` that says why. Every ``RequestCanceled`` log
(the requester's ``cancelRequest`` or ``reclaim``, refunded by the contract) becomes a
`CancelRequested` for ``PREFIX.cancels.v1``: the workers stop the request if they still can.
A request made with ``requestGenerationWithOptions`` is followed, in the same transaction, by
a ``RequestOptions`` log (`acesteps.chainoptions`): `options_of` pairs them, and options
that do not decode, or that the request model refuses (an unknown key, a bpm out of range,
a model or preset name of the wrong form, invalid UTF-8), make the request's
`GenerationFailed`, as a bad prompt does. Whether the named model and preset are served is
the generators' to say (``unknown_model``, ``unknown_preset``).

A request whose options ask for n variations (`acesteps.variations`) is n requests, all made
by the contract in its transaction: the request itself (its record carries ``variations``)
and its variations, each with its own ``GenerationRequested`` and ``RequestOptions`` and then
a ``VariationRequested(requestId, parentId, index)``, which `variations_of` pairs with it as
`options_of` pairs options: the variation's record names ``parent_id`` and ``variation``.

The strings are decoded as bytes and then as UTF-8 ourselves: the contract takes ``string
calldata`` and Solidity never checks UTF-8, so a raw call can emit any bytes.
"""

from __future__ import annotations

from pydantic import ValidationError
from web3 import AsyncWeb3

from acesteps.chainoptions import STRUCT_NAMES, InvalidUtf8, decode_options, utf8
from acesteps.messages import CancelRequested, ChainOrigin, GenerationFailed, GenerationRequest
from acesteps.registry import EventDecodeError, decode_event, event_topic
from acesteps.types import parse_request_id
from listener.chainreader import RawLog

__all__ = [
    "EVENTS",
    "Options",
    "from_log",
    "is_cancel",
    "is_options",
    "is_variation",
    "options_of",
    "request_id_of",
    "variations_of",
]

EVENT = "GenerationRequested"
CANCELED = "RequestCanceled"
OPTIONS = "RequestOptions"
VARIATION = "VariationRequested"
EVENTS = (EVENT, CANCELED, OPTIONS, VARIATION)
"""The events the listener reads."""

Options = dict[tuple[str, str], bytes]
"""(transaction hash, request id) -> the ``abi.encode(options)`` its RequestOptions log holds."""

Variations = dict[tuple[str, str], tuple[str, int]]
"""(transaction hash, request id) -> (parent id, index) of its VariationRequested log."""


def request_id_of(log: RawLog) -> str | None:
    """The request id a ``GenerationRequested`` log names (its indexed ``requestId``), or None
    when the log carries none."""
    try:
        return parse_request_id(
            decode_event(EVENT, log.topics, b"", indexed_only=True)["requestId"]
        )
    except EventDecodeError:
        return None


def is_cancel(log: RawLog) -> bool:
    """A ``RequestCanceled`` log."""
    return bool(log.topics) and log.topics[0].lower() == event_topic(CANCELED)


def is_options(log: RawLog) -> bool:
    """A ``RequestOptions`` log."""
    return bool(log.topics) and log.topics[0].lower() == event_topic(OPTIONS)


def is_variation(log: RawLog) -> bool:
    """A ``VariationRequested`` log."""
    return bool(log.topics) and log.topics[0].lower() == event_topic(VARIATION)


def options_of(logs: list[RawLog]) -> Options:
    """The options of the requests among ``logs``, by transaction and request id."""
    found: Options = {}
    for log in logs:
        if not is_options(log):
            continue
        try:
            event = decode_event(OPTIONS, log.topics, log.data)
        except EventDecodeError:
            continue  # only our contract emits it; its request then fails as undecodable
        found[(log.tx_hash.lower(), str(event["requestId"]).lower())] = bytes(event["options"])
    return found


def variations_of(logs: list[RawLog]) -> Variations:
    """The variations among ``logs``: their parents and indexes, by transaction and id."""
    found: Variations = {}
    for log in logs:
        if not is_variation(log):
            continue
        try:
            event = decode_event(VARIATION, log.topics, log.data)
        except EventDecodeError:
            continue  # only our contract emits it: the request is then read as no variation
        key = (log.tx_hash.lower(), str(event["requestId"]).lower())
        found[key] = (str(event["parentId"]).lower(), int(event["index"]))
    return found


def _failed(request_id: str, origin: ChainOrigin, code: str, message: str) -> GenerationFailed:
    return GenerationFailed(
        request_id=request_id,
        stage="listener",
        code=code,
        message=message[:4000],
        source="chain",
        chain=origin,
    )


def _explain(exc: ValidationError) -> str:
    names = {**STRUCT_NAMES, "duration_s": "durationSeconds"}
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{names.get(field, field)}: {err['msg']}")
    return "; ".join(parts)


def from_log(
    log: RawLog, chain_id: int, options: Options | None = None, variations: Variations | None = None
) -> GenerationRequest | GenerationFailed | CancelRequested | None:
    """The record for one log (a request's options from ``options``, see `options_of`, and
    whose variation it is from ``variations``, see `variations_of`); None only for a log that
    carries no request id at all."""
    if is_cancel(log):
        return _cancel(log)
    request_id = request_id_of(log)
    if request_id is None:
        return None
    origin = ChainOrigin(
        chain_id=chain_id,
        contract=AsyncWeb3.to_checksum_address(log.address),
        block_number=log.block_number,
        block_hash=log.block_hash,
        tx_hash=log.tx_hash,
        log_index=log.log_index,
    )
    try:
        event = decode_event(EVENT, log.topics, log.data)
    except EventDecodeError as exc:
        return _failed(request_id, origin, "undecodable_event", str(exc))
    try:
        prompt = utf8(event["prompt"], "prompt")
        lyrics = utf8(event["lyrics"], "lyrics")
    except ValueError as exc:
        return _failed(request_id, origin, "invalid_utf8", str(exc))
    key = (log.tx_hash.lower(), request_id.lower())
    raw = (options or {}).get(key)
    try:
        asked = {} if raw is None else decode_options(raw)
    except ValueError as exc:
        code = "invalid_utf8" if isinstance(exc, InvalidUtf8) else "invalid_options"
        return _failed(request_id, origin, code, f"options: {exc}")
    parent_id, variation = (variations or {}).get(key, (None, None))
    try:
        return GenerationRequest(
            **asked,
            request_id=request_id,
            source="chain",
            prompt=prompt,
            lyrics=lyrics,
            duration_s=event["durationSeconds"],
            requester=event["requester"],
            chain=origin,
            parent_id=parent_id,
            variation=variation,
        )
    except ValidationError as exc:
        return _failed(request_id, origin, "invalid_request", _explain(exc))


def _cancel(log: RawLog) -> CancelRequested | None:
    try:
        event = decode_event(CANCELED, log.topics, log.data)
    except EventDecodeError:
        return None  # our contract's own event: only another contract could emit it malformed
    return CancelRequested(
        request_id=parse_request_id(event["requestId"]) or "",
        reason="chain",
        by=event["requester"],
        tx_hash=log.tx_hash,
    )
