"""What the verification page and the track pages are told (`listener.api.pages`)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import urlsplit

__all__ = ["PageConfig"]


@dataclass(frozen=True)
class PageConfig:
    """What the verification and track pages are told; None: not known to this server."""

    rpc_url: str | None = None
    """The JSON-RPC endpoint the verification page suggests (the user may change it)."""
    gateway_url: str | None = None
    explorer_url: str | None = None
    """A block explorer's base: transactions link to ``BASE/tx/HASH``."""
    from_block: int = 0
    """Where log searches start: the registry's deployment block when known."""

    @classmethod
    def of(
        cls,
        rpc_url: str,
        public_rpc_url: str | None,
        gateway_url: str | None,
        explorer_url: str | None,
        from_block: int | None,
    ) -> PageConfig:
        """From the settings: the public RPC URL when set, else the service's own when it is
        on a loopback address (a provider's URL often carries a key: never handed out
        unasked)."""
        return cls(
            rpc_url=public_rpc_url or (rpc_url if _loopback(rpc_url) else None),
            gateway_url=gateway_url,
            explorer_url=explorer_url.rstrip("/") if explorer_url else None,
            from_block=from_block or 0,
        )


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
