"""Reading blocks and ``GenerationRequested`` logs from the JSON-RPC node, with retries.

RPC failures (connection refused, timeouts, 5xx, node errors) are retried with capped
exponential backoff, forever: the listener keeps its place and resumes when the node comes
back. A ``eth_getLogs`` range that the node refuses as too large raises `RangeTooLarge`, so
the poller can halve it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, Web3RPCError

from acesteps.backoff import Backoff
from acesteps.registry import event_topic
from acesteps.types import to_hex

__all__ = ["ChainReader", "Header", "RangeTooLarge", "RawLog", "Web3Reader"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Phrases nodes use when a getLogs range or result set is too big (geth, erigon, Alchemy,
# Infura, QuickNode, anvil, ...).
_TOO_LARGE = re.compile(
    r"too many|more than \d+ results|range (is )?too (large|wide)|exceed|limit|response size",
    re.IGNORECASE,
)


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
        self._topic = event_topic("GenerationRequested")
        self._backoff = Backoff(initial_s=min(0.2, backoff_max_s), max_s=backoff_max_s)
        self._sleep = sleep

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except RangeTooLarge:
                raise
            except (Web3RPCError, BlockNotFound, aiohttp.ClientError, OSError, TimeoutError) as exc:
                attempt += 1
                delay = self._backoff.delay(attempt)
                log.warning(
                    "RPC %s failed (%s: %s); retrying in %.1fs",
                    what,
                    type(exc).__name__,
                    exc,
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
                        "topics": [self._topic],
                    }
                )
            except Web3RPCError as exc:
                if _TOO_LARGE.search(str(exc)):
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
