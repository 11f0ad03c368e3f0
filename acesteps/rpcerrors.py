"""What a JSON-RPC node's failures mean: a rate limit, a range too large, or anything else.

Providers share codes (Infura answers -32005 both to "query returned more than 10000
results" and to "daily request count exceeded, request rate limited"), so the message is what
tells them apart; a rate limit is checked first, as its phrases are the more specific ones.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from web3.exceptions import Web3RPCError

__all__ = [
    "MAX_RETRY_AFTER_S",
    "range_too_large",
    "rate_limited",
    "rate_limited_text",
    "retry_after_s",
]

# Phrases nodes use when a getLogs range or result set is too big (geth "query returned more
# than 10000 results", Alchemy "Log response size exceeded", QuickNode "limited to a 10,000
# range", Ankr/BSC "exceed maximum block range: 5000", Cloudflare "block range is too wide",
# Chainstack "Block range limit exceeded", ...).
_TOO_LARGE = re.compile(
    r"more than \d+ results|too many (results|logs|blocks)|range (is )?too (large|wide|big)"
    r"|response size|block range|range limit|limited to (a )?[\d,]+|max(imum)? (block )?range"
    r"|result set too large|query timeout exceeded",
    re.IGNORECASE,
)
# Phrases of rate limits and exhausted quotas.
_RATE_LIMITED = re.compile(
    r"rate.?limit|too many requests|request rate|requests per second|compute units"
    r"|capacity|quota|throughput|credits|daily request count|exceeded .*limit for",
    re.IGNORECASE,
)
MAX_RETRY_AFTER_S = 300.0


def rate_limited_text(text: str) -> bool:
    return bool(_RATE_LIMITED.search(text))


def rate_limited(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status == 429
    return isinstance(exc, Web3RPCError) and rate_limited_text(str(exc))


def range_too_large(exc: BaseException) -> bool:
    return (
        isinstance(exc, Web3RPCError)
        and not rate_limited(exc)
        and bool(_TOO_LARGE.search(str(exc)))
    )


def retry_after_s(exc: BaseException) -> float | None:
    """What an HTTP 429 or 503 answer's ``Retry-After`` asks (seconds, or an HTTP date)."""
    headers: Mapping[str, Any] | None = getattr(exc, "headers", None)
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
