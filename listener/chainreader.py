"""Reading blocks and the contract's logs the listener uses (``GenerationRequested``,
``RequestCanceled``, ``RequestOptions``, ``VariationRequested``) from the JSON-RPC node, with
retries.

Every failure of a call (connection refused, timeouts, HTTP 429 and 5xx, a node's error, an
answer that is not JSON-RPC) is retried, forever, with capped exponential back-off and
jitter: the listener keeps its place and resumes when the node comes back. A rate limit (HTTP
429, or a JSON-RPC error that says so: Infura's -32005 "request rate limited", Alchemy's
"compute units per second capacity", ...) waits at least what the provider's ``Retry-After``
asks. Only a ``eth_getLogs`` answer that says the range or its result is too big raises
`RangeTooLarge`, so the poller can halve the range; a rate limit never does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from web3 import AsyncWeb3
from web3.exceptions import Web3Exception, Web3RPCError

from acesteps.backoff import Backoff
from acesteps.registry import event_topic
from acesteps.rpcerrors import range_too_large, rate_limited, retry_after_s
from acesteps.types import to_hex

__all__ = ["ChainReader", "Header", "RangeTooLarge", "RawLog", "Web3Reader"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Header:
    number: int
    hash: str
    parent_hash: str


@dataclass(frozen=True)
class RawLog:
    address: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    topics: tuple[str, ...]
    data: bytes


class RangeTooLarge(Exception):
    """The node refused an eth_getLogs range."""


class ChainReader(Protocol):
    async def head(self, tag: str) -> int: ...

    async def header(self, number: int) -> Header: ...

    async def logs(self, start: int, end: int) -> list[RawLog]: ...


class Web3Reader:
    """`ChainReader` on web3.py's async API, filtering logs by address and topic0."""

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        contract: str,
        *,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._w3 = w3
        self._address = AsyncWeb3.to_checksum_address(contract)
        # The events `listener.events` turns into records.
        names = ("GenerationRequested", "RequestCanceled", "RequestOptions", "VariationRequested")
        self._topics = [event_topic(name) for name in names]
        self._backoff = Backoff(initial_s=min(0.2, backoff_max_s), max_s=backoff_max_s, jitter=0.5)
        self._sleep = sleep

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except RangeTooLarge:
                raise
            except (Web3Exception, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                # ValueError: an answer that is not JSON (a proxy's error page, a cut body).
                attempt += 1
                delay = self._backoff.delay(attempt)
                limited = rate_limited(exc)
                asked = retry_after_s(exc)
                if asked is not None:
                    delay = max(delay, asked)
                log.warning(
                    "RPC %s %s (%s: %s); retrying in %.1fs",
                    what,
                    "rate-limited" if limited else "failed",
                    type(exc).__name__,
                    " ".join(str(exc).split())[:300],
                    delay,
                )
            await self._sleep(delay)

    async def chain_id(self) -> int:
        async def call() -> int:
            return int(await self._w3.eth.chain_id)

        return await self._retry("eth_chainId", call)

    async def head(self, tag: str) -> int:
        async def call() -> int:
            block = await self._w3.eth.get_block(tag)  # type: ignore[arg-type]
            return int(block["number"])

        return await self._retry(f"get_block({tag})", call)

    async def header(self, number: int) -> Header:
        async def call() -> Header:
            block = await self._w3.eth.get_block(number)
            return Header(number, to_hex(block["hash"]), to_hex(block["parentHash"]))

        return await self._retry(f"get_block({number})", call)

    async def logs(self, start: int, end: int) -> list[RawLog]:
        async def call() -> list[RawLog]:
            try:
                raw = await self._w3.eth.get_logs(
                    {
                        "fromBlock": start,
                        "toBlock": end,
                        "address": self._address,
                        "topics": [self._topics],  # topic0 is any of them
                    }
                )
            except Web3RPCError as exc:
                if range_too_large(exc):
                    raise RangeTooLarge(str(exc)) from exc
                raise
            return [
                RawLog(
                    address=str(item["address"]),
                    block_number=int(item["blockNumber"]),
                    block_hash=to_hex(item["blockHash"]),
                    tx_hash=to_hex(item["transactionHash"]),
                    log_index=int(item["logIndex"]),
                    topics=tuple(to_hex(t) for t in item["topics"]),
                    data=bytes(item["data"]),
                )
                for item in raw
            ]

        return await self._retry(f"get_logs({start}..{end})", call)
