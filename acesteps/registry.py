"""``AceStepsRegistry``, typed: the one module that builds its calls and reads its events.

The listener, the publisher, the API and ``acesteps verify`` go through `Registry` (reads, and
the calls a `publisher.txsender.TxSender` signs) and `decode_event` (logs, decoded by event
name and parameter name from the ABI, never by topic position). The ABI and bytecode are the
committed artifacts of ``contracts/abi/``, shipped inside the package (``acesteps/data/abi``)
and read with `importlib.resources`, so an installed wheel needs no checkout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib.resources import files
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import Web3Exception

from acesteps.ipfs.unixfs import keccak_block_cid
from acesteps.reverts import decode_revert
from acesteps.types import to_bytes32, to_hex

__all__ = [
    "NAME",
    "EventDecodeError",
    "LogRef",
    "Provenance",
    "Registry",
    "RequestStatus",
    "Track",
    "TrackItem",
    "abi",
    "bytecode",
    "decode_event",
    "event_topic",
    "has_function",
    "offchain_request_id",
    "request_id_of",
]

NAME: Final = "AceStepsRegistry"
OFFCHAIN_DOMAIN: Final = "acesteps.offchain.v1"
LOG_RANGE: Final = 10_000  # blocks per eth_getLogs of a scan (halved when a node refuses)
_ZERO: Final = b"\x00" * 32


@cache
def abi() -> list[dict[str, Any]]:
    """The registry's ABI (package data)."""
    text = (files("acesteps") / "data" / "abi" / f"{NAME}.json").read_text()
    loaded: list[dict[str, Any]] = json.loads(text)
    return loaded


@cache
def bytecode() -> str:
    """The deployable bytecode, ``0x``-hex (package data)."""
    return (files("acesteps") / "data" / "abi" / f"{NAME}.bin").read_text().strip()


def has_function(name: str) -> bool:
    """Whether the registry's ABI (package data) has a function ``name``: a view added in a
    later version (``requestOfAudio``) is called only when it does."""
    return any(i.get("type") == "function" and i.get("name") == name for i in abi())


def bytecode_hash() -> str:
    """keccak256 of `bytecode`: which version of the contract a deployment is."""
    return to_hex(keccak(hexstr=bytecode()))


class RequestStatus(IntEnum):
    """``AceStepsRegistry.Status``."""

    NONE = 0
    PENDING = 1
    REGISTERED = 2
    FAILED = 3
    CANCELED = 4


@dataclass(frozen=True)
class Track:
    """A registration: the keccak256 of the file's bytes and its CID."""

    audio_hash: str
    cid: str


@dataclass(frozen=True)
class Provenance:
    """How a registered track was made: its generation manifest's hash and CID (one raw block
    named by its keccak-256, so the CID follows from the hash: `of`)."""

    manifest_hash: str
    manifest_cid: str

    @classmethod
    def of(cls, manifest_hash: str | bytes) -> Provenance:
        """The provenance of a manifest whose keccak256 is ``manifest_hash``."""
        return cls(to_hex(manifest_hash), keccak_block_cid(to_bytes32(manifest_hash)))


@dataclass(frozen=True)
class TrackItem:
    """One registration of a ``registerTracks`` batch: a chain request, or an HTTP request
    given by its ``offchain_id`` (``request_id`` is then ``offchainRequestId(offchain_id)``)."""

    request_id: str
    track: Track
    provenance: Provenance
    offchain_id: str | None = None


@dataclass(frozen=True)
class LogRef:
    """Where an event was emitted."""

    tx_hash: str
    block_number: int
    block_hash: str


# ---------------------------------------------------------------------- events


class EventDecodeError(ValueError):
    """A log that does not decode as the named event."""


def _event(name: str) -> dict[str, Any]:
    for item in abi():
        if item.get("type") == "event" and item.get("name") == name:
            return item
    raise KeyError(f"{NAME} has no event {name}")


@cache
def event_topic(name: str) -> str:
    """topic0 of event ``name``: keccak256 of its signature, ``0x``-hex."""
    inputs = ",".join(str(i["type"]) for i in _event(name)["inputs"])
    return to_hex(keccak(text=f"{name}({inputs})"))


def decode_event(
    name: str, topics: Sequence[str], data: bytes, *, indexed_only: bool = False
) -> dict[str, Any]:
    """The parameters of a ``name`` log by parameter name: bytes32 as ``0x``-hex, addresses
    checksummed, and strings as raw bytes (Solidity never checks UTF-8: a raw call can emit
    any bytes, so the caller decides what to do with them). ``indexed_only`` decodes the
    topics alone. Raises `EventDecodeError`."""
    event = _event(name)
    if not topics or topics[0].lower() != event_topic(name):
        raise EventDecodeError(f"not a {name} log")
    indexed = [i for i in event["inputs"] if i["indexed"]]
    plain = [] if indexed_only else [i for i in event["inputs"] if not i["indexed"]]
    if len(topics) != len(indexed) + 1:
        raise EventDecodeError(f"{name} log with {len(topics)} topics, expected {len(indexed) + 1}")
    args: dict[str, Any] = {}
    try:
        for item, topic in zip(indexed, topics[1:], strict=True):
            (args[item["name"]],) = abi_decode([item["type"]], bytes.fromhex(topic[2:]))
        types = ["bytes" if i["type"] == "string" else i["type"] for i in plain]
        for item, value in zip(plain, abi_decode(types, data), strict=True):
            args[item["name"]] = value
    except Exception as exc:  # eth_abi raises many types for malformed data
        raise EventDecodeError(f"{name} event data: {type(exc).__name__}: {exc}") from None
    for item in [*indexed, *plain]:
        if item["type"] == "bytes32":
            args[item["name"]] = to_hex(args[item["name"]])
        elif item["type"] == "address":
            args[item["name"]] = AsyncWeb3.to_checksum_address(args[item["name"]])
    return args


# ---------------------------------------------------------------------- ids


def request_id_of(chain_id: int, contract: str, requester: str, salt: str | bytes) -> str:
    """``requestIdOf(requester, salt)``: a chain request's id."""
    encoded = abi_encode(
        ["uint256", "address", "address", "bytes32"],
        [chain_id, contract, requester, to_bytes32(salt)],
    )
    return to_hex(keccak(encoded))


def offchain_request_id(chain_id: int, contract: str, offchain_id: str | bytes) -> str:
    """``offchainRequestId(offchainId)``: the id an HTTP request is registered under."""
    encoded = abi_encode(
        ["string", "uint256", "address", "bytes32"],
        [OFFCHAIN_DOMAIN, chain_id, contract, to_bytes32(offchain_id)],
    )
    return to_hex(keccak(encoded))


# ---------------------------------------------------------------------- the contract


class Registry:
    """One deployed registry on one node: typed reads and the calls a signer sends."""

    def __init__(self, w3: AsyncWeb3[Any], address: str) -> None:
        self.w3 = w3
        self.contract: AsyncContract = w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(address), abi=abi()
        )
        self.address: str = str(self.contract.address)
        self._chain_id: int | None = None

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(await self.w3.eth.chain_id)
        return self._chain_id

    # ------------------------------------------------------------ reads

    async def status(self, request_id: str | bytes) -> RequestStatus:
        """The on-chain status of a request (`RequestStatus.NONE` for ids never requested; a
        registered off-chain id reads `RequestStatus.REGISTERED`)."""
        call = self.contract.functions.requests(to_bytes32(request_id))
        values = await call.call()
        # By name: the getter's field order follows the struct's, which may be repacked.
        names = [output["name"] for output in call.abi["outputs"]]
        return RequestStatus(values[names.index("status")])

    async def track_of(self, request_id: str | bytes) -> Track | None:
        audio_hash, cid = await self.contract.functions.trackOf(to_bytes32(request_id)).call()
        if bytes(audio_hash) == _ZERO:
            return None
        return Track(to_hex(bytes(audio_hash)), str(cid))

    async def provenance_of(self, request_id: str | bytes) -> Provenance | None:
        call = self.contract.functions.provenanceOf(to_bytes32(request_id))
        manifest_hash, manifest_cid = await call.call()
        if bytes(manifest_hash) == _ZERO:
            return None
        return Provenance(to_hex(bytes(manifest_hash)), str(manifest_cid))

    async def parent_of(self, request_id: str | bytes) -> tuple[str, int] | None:
        """``parentOf``: the request a variation belongs to and its index; None for any other
        request, and on a contract without variations (before 1.3.0)."""
        try:
            call = self.contract.functions.parentOf(to_bytes32(request_id))
            parent, index = await call.call()
        except Web3Exception:
            return None
        return None if bytes(parent) == _ZERO else (to_hex(bytes(parent)), int(index))

    async def verify(self, request_id: str | bytes, audio_hash: str | bytes) -> bool:
        """The contract's own ``verify(requestId, audioHash)``."""
        call = self.contract.functions.verify(to_bytes32(request_id), to_bytes32(audio_hash))
        return bool(await call.call())

    async def request_of_audio(self, audio_hash: str | bytes) -> str | None:
        """The request whose track was first registered with these bytes (``requestOfAudio``);
        None when no registration has them."""
        found = await self.contract.functions.requestOfAudio(to_bytes32(audio_hash)).call()
        return None if bytes(found) == _ZERO else to_hex(bytes(found))

    async def request_fee(self) -> int:
        return int(await self.contract.functions.requestFee().call())

    async def request_fee_with_callback(self, callback_gas_limit: int) -> int:
        """What ``requestGenerationWithCallback`` with this gas limit costs: ``requestFee``
        plus the limit times ``callbackGasPrice``."""
        call = self.contract.functions.requestFeeWithCallback(callback_gas_limit)
        return int(await call.call())

    async def callback_gas_price(self) -> int:
        """``callbackGasPrice``: wei per gas of a callback's limit."""
        return int(await self.contract.functions.callbackGasPrice().call())

    async def callback_gas_limit(self, request_id: str | bytes) -> int:
        """The gas a request's callback gets when it is registered; 0: no callback."""
        call = self.contract.functions.requests(to_bytes32(request_id))
        values = await call.call()
        names = [output["name"] for output in call.abi["outputs"]]
        return int(values[names.index("callbackGasLimit")])

    async def version(self) -> str | None:
        """The contract's ``VERSION``; None for a deployment older than the constant."""
        try:
            return str(await self.contract.functions.VERSION().call())
        except Web3Exception:
            return None

    async def reclaim_after_blocks(self) -> int:
        return int(await self.contract.functions.reclaimAfterBlocks().call())

    async def reclaimable_at(self, request_id: str | bytes) -> int:
        """The first block in which the requester may ``reclaim`` a pending request's fee; 0
        when the request is not pending."""
        call = self.contract.functions.reclaimableAt(to_bytes32(request_id))
        return int(await call.call())

    async def registration(self, request_id: str | bytes, from_block: int = 0) -> LogRef | None:
        """Where ``request_id`` was registered: its ``TrackRegistered`` log, if any."""
        return await self._log_of("TrackRegistered", request_id, from_block)

    async def failure(self, request_id: str | bytes, from_block: int = 0) -> LogRef | None:
        """Where ``request_id`` was marked failed: its ``GenerationFailed`` log, if any."""
        return await self._log_of("GenerationFailed", request_id, from_block)

    async def _log_of(self, event: str, request_id: str | bytes, from_block: int) -> LogRef | None:
        logs = await self.contract.events[event]().get_logs(
            argument_filters={"requestId": to_bytes32(request_id)},
            from_block=from_block,
            to_block="latest",
        )
        for entry in logs:  # at most one: the contract does each once per id
            return LogRef(
                to_hex(entry["transactionHash"]),
                int(entry["blockNumber"]),
                to_hex(entry["blockHash"]),
            )
        return None

    async def ids_with_cid(self, cid: str, from_block: int = 0) -> list[str]:
        """Request ids whose ``TrackRegistered`` carries ``cid``, oldest first.

        The CID is not an indexed topic, so this scans every registration from ``from_block``
        in bounded ranges: fine for a tool, too slow for a service on a long chain.
        """
        return await self._registered_where("cid", cid, from_block)

    async def ids_with_audio_hash(self, audio_hash: str | bytes, from_block: int = 0) -> list[str]:
        """Request ids whose ``TrackRegistered`` carries ``audio_hash``, oldest first: the same
        scan as `ids_with_cid`, for a deployment without ``requestOfAudio``
        (`has_function`)."""
        return await self._registered_where("audioHash", to_bytes32(audio_hash), from_block)

    async def _registered_where(self, name: str, value: object, from_block: int) -> list[str]:
        """Request ids of the ``TrackRegistered`` logs whose ``name`` equals ``value``, from
        ``from_block`` to the head, in ranges of `LOG_RANGE` blocks (halved when refused)."""
        head = await self.w3.eth.block_number
        event, found = self.contract.events.TrackRegistered(), []
        start, step = from_block, LOG_RANGE
        while start <= head:
            end = min(start + step - 1, head)
            try:
                logs = await event.get_logs(from_block=start, to_block=end)
            except Web3Exception:
                if step == 1:
                    raise
                step = max(1, step // 2)  # the node refused the range: try a smaller one
                continue
            found += [to_hex(e["args"]["requestId"]) for e in logs if e["args"][name] == value]
            start = end + 1
        return found

    def decode_revert(self, data: object) -> tuple[str, tuple[object, ...]]:
        """The custom error (or ``Error``/``Panic``) in revert ``data``."""
        return decode_revert(abi(), data)

    # ------------------------------------------------------------ calls (signed elsewhere)

    def register_track(
        self, request_id: str | bytes, track: Track, provenance: Provenance
    ) -> AsyncContractFunction:
        return self.contract.functions.registerTrack(
            to_bytes32(request_id), *_track_args(track, provenance)
        )

    def register_offchain_track(
        self, offchain_id: str | bytes, track: Track, provenance: Provenance
    ) -> AsyncContractFunction:
        return self.contract.functions.registerOffchainTrack(
            to_bytes32(offchain_id), *_track_args(track, provenance)
        )

    def register_tracks(self, items: Sequence[TrackItem]) -> AsyncContractFunction:
        """``registerTracks``: every item registered, or skipped with ``TrackSkipped``
        (`skipped`); the manifest CID is not sent: the contract derives it from the hash."""
        return self.contract.functions.registerTracks(
            [
                (
                    to_bytes32(item.offchain_id or item.request_id),
                    item.offchain_id is not None,
                    to_bytes32(item.track.audio_hash),
                    item.track.cid,
                    to_bytes32(item.provenance.manifest_hash),
                )
                for item in items
            ]
        )

    def skipped(self, receipt: Any) -> dict[str, str]:
        """request id -> the error name of each item a ``registerTracks`` receipt skipped."""
        topic, found = event_topic("TrackSkipped"), {}
        for log in receipt["logs"]:
            topics = [to_hex(t) for t in log["topics"]]
            if topics and topics[0] == topic and log["address"].lower() == self.address.lower():
                args = decode_event("TrackSkipped", topics, bytes(log["data"]))
                found[args["requestId"]] = decode_revert(abi(), bytes(args["reason"]))[0]
        return found

    def mark_failed(self, request_id: str | bytes, reason: str) -> AsyncContractFunction:
        return self.contract.functions.markFailed(to_bytes32(request_id), reason)

    def request_generation(
        self, prompt: str, lyrics: str, duration_s: int, salt: str | bytes | None = None
    ) -> AsyncContractFunction:
        """``requestGeneration``, or with ``salt`` ``requestGenerationWithSalt`` (the id is then
        `request_id_of` the sender and the salt)."""
        if salt is None:
            return self.contract.functions.requestGeneration(prompt, lyrics, duration_s)
        return self.contract.functions.requestGenerationWithSalt(
            prompt, lyrics, duration_s, to_bytes32(salt)
        )

    def request_generation_with_callback(
        self, prompt: str, lyrics: str, duration_s: int, callback_gas_limit: int
    ) -> AsyncContractFunction:
        """``requestGenerationWithCallback``: the requester (a contract) is called back with
        ``onTrackRegistered`` and exactly ``callback_gas_limit`` gas when its track is
        registered; the value to send is `request_fee_with_callback`."""
        return self.contract.functions.requestGenerationWithCallback(
            prompt, lyrics, duration_s, callback_gas_limit
        )

    def cancel_request(self, request_id: str | bytes) -> AsyncContractFunction:
        """``cancelRequest``: the requester withdraws a pending request and is refunded
        (``RequestCanceled``, ``reclaimed`` false)."""
        return self.contract.functions.cancelRequest(to_bytes32(request_id))

    def reclaim(self, request_id: str | bytes) -> AsyncContractFunction:
        """``reclaim``: the requester takes back the fee of a request still pending from block
        `reclaimable_at` on (``RequestCanceled``, ``reclaimed`` true; earlier: ``TooEarly``)."""
        return self.contract.functions.reclaim(to_bytes32(request_id))

    def requested(self, receipt: Any) -> list[dict[str, Any]]:
        """The ``GenerationRequested`` events of a transaction receipt, decoded."""
        return self._events("GenerationRequested", receipt)

    def callback_results(self, receipt: Any) -> dict[str, bool]:
        """request id -> whether its callback succeeded, from the ``CallbackResult`` events of
        a registration's receipt (requests without a callback have none)."""
        return {e["requestId"]: bool(e["success"]) for e in self._events("CallbackResult", receipt)}

    def _events(self, name: str, receipt: Any) -> list[dict[str, Any]]:
        topic = event_topic(name)
        return [
            decode_event(name, [to_hex(t) for t in log["topics"]], bytes(log["data"]))
            for log in receipt["logs"]
            if log["topics"]
            and to_hex(log["topics"][0]) == topic
            and log["address"].lower() == self.address.lower()
        ]


def _track_args(track: Track, provenance: Provenance) -> tuple[bytes, str, bytes, str]:
    return (
        to_bytes32(track.audio_hash),
        track.cid,
        to_bytes32(provenance.manifest_hash),
        provenance.manifest_cid,
    )
