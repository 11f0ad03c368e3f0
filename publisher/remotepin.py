"""Remote pins: asks IPFS Pinning Service API services to pin a published track too.

The API (https://ipfs.github.io/pinning-services-api-spec/) is plain JSON over HTTP with a
Bearer token. Two calls are used:

- ``GET {endpoint}/pins?cid=CID&status=queued&status=pinning&status=pinned`` lists the pins
  this token already has for the CID (a ``PinResults``: ``{"count", "results": [PinStatus]}``).
  Without a ``status`` filter a service lists only finished pins, so the filter names every
  status but ``failed``: a pending pin is reused, a failed one is asked for again.
- ``POST {endpoint}/pins`` with the ``Pin`` ``{"cid", "name"}`` creates one and answers
  ``202`` with its ``PinStatus`` ``{"requestid", "status", "created", "pin", "delegates"}``.

Reading before creating keeps the publisher idempotent: a retried AudioReady (the chain was
slow, the process restarted) finds the pin its first try created instead of adding another.

Remote pins are **best effort**. When they are asked, the track is already pinned on our own
Kubo, and it is then registered on chain whatever they answer: a service that is down, slow,
refuses the token or answers 5xx never blocks or fails publishing. Each service's outcome is
recorded in ``TrackPublished.remote_pins`` instead: its ``PinStatus.status`` (``queued``,
``pinning``, ``pinned``, ``failed``), ``unreachable`` (connection refused or reset, timeout),
or ``error: <HTTP status>`` / ``error: invalid response``. A pin that is still ``queued`` is
the service's job to finish; it is not polled.

Tokens are only read (``get_secret_value``) to build the ``Authorization`` header of a request:
they are never logged nor put in a status, and redirects are not followed, so the header is
never sent to another host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

from publisher.settings import PinningService

__all__ = ["PIN_STATUSES", "UNREACHABLE", "RemotePinner"]

log = logging.getLogger(__name__)

PIN_STATUSES: Final = ("queued", "pinning", "pinned", "failed")
"""The statuses a service reports (the API's ``Status`` enum)."""

UNREACHABLE: Final = "unreachable"
INVALID_RESPONSE: Final = "error: invalid response"
MAX_NAME_CHARS: Final = 255  # Pin.name's maxLength

# Best first: which of several existing pins for one CID to report.
_RANK: Final = {"pinned": 0, "pinning": 1, "queued": 2}


class _InvalidResponse(Exception):
    pass


class RemotePinner:
    """An async client of several pinning services, sharing one aiohttp session.

    Use it as an async context manager (the session is opened on enter, closed on exit). With
    no services it opens no session and `pin_all` makes no call.
    """

    def __init__(self, services: Sequence[PinningService], timeout_s: float = 30.0) -> None:
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise ValueError(f"pinning service names must be unique, got {names}")
        self._services = tuple(services)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def services(self) -> tuple[PinningService, ...]:
        return self._services

    async def __aenter__(self) -> Self:
        if self._services and self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pin_all(self, cid: str, name: str) -> dict[str, str]:
        """Ask every service to pin ``cid``, concurrently: service name -> status.

        Never raises for a service's failure (see the module's docstring); only cancellation
        propagates.
        """
        if not self._services:
            return {}
        statuses = await asyncio.gather(
            *(self.pin(service, cid, name) for service in self._services)
        )
        return dict(zip((s.name for s in self._services), statuses, strict=True))

    async def pin(self, service: PinningService, cid: str, name: str) -> str:
        """Pin ``cid`` on one service (reusing its existing pin): the status to record."""
        try:
            status = await self._pin(service, cid, name)
        except _InvalidResponse as exc:
            log.warning("remote pin of %s on %s: invalid response (%s)", cid, service.name, exc)
            return INVALID_RESPONSE
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "remote pin of %s on %s: unreachable (%s)", cid, service.name, type(exc).__name__
            )
            return UNREACHABLE
        if status in ("queued", "pinning", "pinned"):
            log.info("remote pin of %s on %s: %s", cid, service.name, status)
        else:
            log.warning("remote pin of %s on %s: %s", cid, service.name, status)
        return status

    async def _pin(self, service: PinningService, cid: str, name: str) -> str:
        if self._session is None:
            raise RuntimeError("RemotePinner used outside its `async with`")
        url = f"{service.endpoint}/pins"
        headers = {"Authorization": f"Bearer {service.token.get_secret_value()}"}
        # 1. An existing pin for this CID (a retry of this track, or pinned by hand)?
        params = [("cid", cid)] + [("status", s) for s in ("queued", "pinning", "pinned")]
        async with self._session.get(
            url, params=params, headers=headers, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                return f"error: {resp.status}"
            existing = _existing_status(await _json(resp))
        if existing is not None:
            return existing
        # 2. No: ask for one.
        pin = {"cid": cid, "name": name[:MAX_NAME_CHARS]}
        async with self._session.post(
            url, json=pin, headers=headers, allow_redirects=False
        ) as resp:
            if not 200 <= resp.status < 300:
                return f"error: {resp.status}"
            return _status_of(await _json(resp))


async def _json(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise _InvalidResponse(f"HTTP {resp.status}, body is not JSON") from exc


def _status_of(pin_status: Any) -> str:
    status = pin_status.get("status") if isinstance(pin_status, dict) else None
    if status not in PIN_STATUSES:
        raise _InvalidResponse(f"not a PinStatus: status {status!r}")
    return str(status)


def _existing_status(results: Any) -> str | None:
    """The best status among the listed pins of ``cid`` that did not fail, or None."""
    listed = results.get("results") if isinstance(results, dict) else None
    if not isinstance(listed, list):
        raise _InvalidResponse("not a PinResults: no results list")
    # The service filtered by CID; its CID may be written in another base, so it is not
    # compared again.
    pending = [s for s in map(_status_of, listed) if s in _RANK]
    return min(pending, key=_RANK.__getitem__) if pending else None
