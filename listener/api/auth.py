"""API keys and per-key rate limits.

Keys are configured as ``ACESTEPS_API_KEYS='{"<key id>": "<secret>", ...}'``. A client sends
its secret as ``Authorization: Bearer <secret>`` (or ``X-API-Key``); the key id is who it is:
it becomes the request's ``requester`` and scopes its ``Idempotency-Key``. With keys off
(``ACESTEPS_API_AUTH=off``, the default on a loopback address) every caller is ``local``,
rate-limited per client address; a wrong secret is refused either way.

Limits are token buckets per caller and per class of endpoint (``generate``: the POST that
costs GPU time; ``read``: everything else), kept in memory: with several API replicas a caller
gets each replica's budget. A submission the API refuses as invalid (400, 413, 422) spends
from a third, larger budget (``errors``) instead of ``generate``: a client's mistakes never
cost it the requests it can make, and a flood of bad requests is still stopped.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["ApiKeys", "RateLimiter", "Unauthorized"]


class Unauthorized(Exception):
    pass


class ApiKeys:
    def __init__(self, keys: dict[str, str], required: bool) -> None:
        if required and not keys:
            raise ValueError("API keys are required but none is configured")
        # Compare digests, in constant time, so a secret's length leaks nothing either.
        self._digests = {key_id: _digest(secret) for key_id, secret in keys.items()}
        self.required = required

    def identify(self, secret: str | None) -> str | None:
        """The caller's key id; None for an anonymous caller (allowed only without keys)."""
        if secret is None:
            if self.required:
                raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
            return None
        digest = _digest(secret)
        for key_id, known in self._digests.items():
            if hmac.compare_digest(digest, known):
                return key_id
        raise Unauthorized("unknown API key")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets: ``per_minute`` sustained, ``burst`` at once, per caller."""

    def __init__(self, per_minute: float, burst: int, max_callers: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max = max_callers

    def take(self, caller: str, now: float | None = None) -> float:
        """0 when allowed (a token is spent); else the seconds until one is available."""
        wait, bucket = self._refill(caller, now)
        if wait == 0:
            bucket.tokens -= 1
        return wait

    def wait(self, caller: str, now: float | None = None) -> float:
        """What `take` would answer, spending nothing: 0 when a token is there."""
        return self._refill(caller, now)[0]

    def _refill(self, caller: str, now: float | None) -> tuple[float, _Bucket]:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(caller, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        self._buckets[caller] = bucket  # most recent last
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            return 0.0, bucket
        return ((1 - bucket.tokens) / self.rate if self.rate > 0 else math.inf), bucket
