"""How the listener's chain reader tells a node's answers apart: a range too large (halve it),
a rate limit (wait, as long as the provider asks), anything else (retry with back-off)."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from web3.exceptions import Web3RPCError
from yarl import URL

from acesteps.rpcerrors import MAX_RETRY_AFTER_S, range_too_large, rate_limited, retry_after_s
from listener.chainreader import RangeTooLarge, Web3Reader

RANGE_ANSWERS = [
    "{'code': -32005, 'message': 'query returned more than 10000 results'}",  # geth, Infura
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
    "eth_getLogs is limited to a 10,000 range",  # QuickNode
    "exceed maximum block range: 5000",  # Ankr, BSC
    "block range is too wide",  # Cloudflare
    "Block range limit exceeded.",  # Chainstack
    "query exceeds max block range 1000",
]
RATE_ANSWERS = [
    "{'code': -32005, 'message': 'daily request count exceeded, request rate limited'}",
    "Your app has exceeded its compute units per second capacity.",  # Alchemy
    "{'code': 429, 'message': 'Too Many Requests'}",
    "project ID request rate exceeded",  # Infura
    "rate limit exceeded",
]


def http_error(status: int, headers: dict[str, str] | None = None) -> aiohttp.ClientResponseError:
    url = URL("http://node.invalid/")
    return aiohttp.ClientResponseError(
        aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url),
        (),
        status=status,
        message="error",
        headers=headers,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("answer", RANGE_ANSWERS)
def test_a_range_answer_halves_the_range(answer: str) -> None:
    exc = Web3RPCError(answer)
    assert range_too_large(exc) and not rate_limited(exc)


@pytest.mark.parametrize("answer", RATE_ANSWERS)
def test_a_rate_limit_is_never_taken_for_a_range(answer: str) -> None:
    exc = Web3RPCError(answer)
    assert rate_limited(exc) and not range_too_large(exc)


def test_http_429_is_a_rate_limit_and_other_errors_are_neither() -> None:
    assert rate_limited(http_error(429))
    assert not rate_limited(http_error(502)) and not range_too_large(http_error(502))
    assert not range_too_large(Web3RPCError("execution reverted"))


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    assert retry_after_s(http_error(429, {"Retry-After": "7"})) == 7
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= (retry_after_s(http_error(503, {"Retry-After": later})) or 0) <= 20
    assert retry_after_s(http_error(429, {"Retry-After": "86400"})) == MAX_RETRY_AFTER_S
    assert retry_after_s(http_error(429, {"Retry-After": "soon"})) is None
    assert retry_after_s(http_error(429)) is None
    assert retry_after_s(Web3RPCError("rate limited")) is None


class Script:
    """A call that fails with each of ``errors`` in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def reader(slept: list[float]) -> Web3Reader:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Web3Reader(
        object(),  # type: ignore[arg-type]
        "0x" + "ab" * 20,
        backoff_max_s=2.0,
        sleep=sleep,
    )


async def test_every_kind_of_failure_is_retried_and_retry_after_is_honoured() -> None:
    slept: list[float] = []
    truncated: Any = None
    try:
        json.loads('{"jsonrpc": "2.0", "result": [')
    except ValueError as exc:
        truncated = exc
    script = Script(
        http_error(429, {"Retry-After": "7"}),
        Web3RPCError(RATE_ANSWERS[0]),
        http_error(502),
        TimeoutError(),
        truncated,
        aiohttp.ClientConnectionError("refused"),
    )
    assert await reader(slept)._retry("eth_getLogs", script) == "answer"
    assert script.calls == 7
    assert slept[0] >= 7, "the provider asked for 7 s"
    assert all(0 < s <= 2.0 for s in slept[1:]), "capped back-off otherwise"


async def test_a_range_too_large_is_not_retried_but_raised() -> None:
    slept: list[float] = []
    with pytest.raises(RangeTooLarge):
        await reader(slept)._retry("eth_getLogs", Script(RangeTooLarge("too big")))
    assert slept == []
