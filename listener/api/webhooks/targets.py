"""Which URLs a webhook may call (server-side request forgery).

A webhook makes the server send a request to a URL a client chose. Without limits a client
could make it reach what only the server can: its loopback, the private network, the cloud's
metadata service (169.254.169.254). So a webhook URL is absolute ``https`` (``http`` only with
``ACESTEPS_API_WEBHOOK_ALLOW_HTTP``), has no user info and at most 2,048 characters, and every
address it stands for must be public: not loopback, private (RFC 1918, fc00::/7), link-local
(169.254/16, fe80::/10), unspecified, multicast, reserved, shared (100.64/10) or otherwise not
globally routable, nor one of those inside an IPv6 form (IPv4-mapped, 6to4, NAT64). Names of
metadata services and ``localhost`` are refused by name. Networks in
``ACESTEPS_API_WEBHOOK_ALLOW_NETS`` are allowed all the same (a receiver on the operator's own
network).

The check runs when a request is submitted (every address the name resolves to must pass) and
again at every attempt, against fresh DNS answers, so a name that later resolves elsewhere (DNS
rebinding) reaches nothing: `GuardedResolver` hands the HTTP client's connector only the
addresses that pass, and an IP literal, which the connector never resolves, is checked before
the attempt. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "MAX_URL_CHARS",
    "GuardedResolver",
    "IPAddress",
    "IPNetwork",
    "TargetPolicy",
    "TargetRefused",
    "refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS: Final = 2048
METADATA_NAMES: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "localhost",
    }
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_IETF = ipaddress.ip_network("192.0.0.0/24")  # protocol assignments (Oracle's metadata: .192)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}


class TargetRefused(OSError):
    """A webhook URL or address that may not be called; the message says why. An OSError, so
    that the HTTP client's connector reports it as the cause of its connection error."""


def _embedded(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _class_of(ip: IPAddress) -> str | None:
    """What kind of address ``ip`` is when it is no public one ("a loopback address"); None
    when it is one."""
    if ip in _METADATA_ADDRESSES:
        return "the cloud metadata address"
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip in _SHARED, "shared (100.64.0.0/10)"),
        (ip.is_reserved or ip in _IETF, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "not globally routable"),
    )
    what = next((what for hit, what in checks if hit), None)
    if what is None:
        return None
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what} address"


def refusal(ip: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why a webhook may not reach ``ip``, as text; None when it may."""
    inner = _embedded(ip)
    if any(ip in net or (inner is not None and inner in net) for net in allow):
        return None
    if inner is not None and (what := _class_of(inner)) is not None:
        return f"{ip} stands for {inner}, {what}"
    what = _class_of(ip)
    return None if what is None else f"{ip} is {what}"


def literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is a literal one (IPv6 with or without brackets)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass
class TargetPolicy:
    """The rules of webhook targets (this module's docstring), and the resolver that names
    are resolved with (default: aiohttp's, made on first use; tests pass their own)."""

    allow_http: bool = False
    allow_nets: tuple[IPNetwork, ...] = ()
    resolver: AbstractResolver | None = None
    resolve_timeout_s: float = 5.0
    _default: AbstractResolver | None = field(default=None, init=False, repr=False)

    def names(self) -> AbstractResolver:
        """The resolver names go through (unfiltered)."""
        if self.resolver is not None:
            return self.resolver
        if self._default is None:
            self._default = DefaultResolver()
        return self._default

    def check_url(self, url: str) -> URL:
        """``url`` parsed, when its form is one a webhook may have; raises TargetRefused."""
        if len(url) > MAX_URL_CHARS:
            raise TargetRefused(f"a webhook URL has at most {MAX_URL_CHARS} characters")
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise TargetRefused("not a URL") from None
        schemes = ("https", "http") if self.allow_http else ("https",)
        if not parsed.absolute or parsed.scheme not in schemes:
            raise TargetRefused(
                f"an absolute {' or '.join(schemes)} URL is needed, got {url[:80]!r}"
            )
        if parsed.user is not None or parsed.password is not None:
            raise TargetRefused("a webhook URL may not carry user info (user:password@)")
        host = (parsed.raw_host or "").rstrip(".").lower()
        if not host:
            raise TargetRefused("a webhook URL needs a host")
        if host in METADATA_NAMES or host.endswith(".localhost"):
            raise TargetRefused(f"{host} is a local or metadata name")
        return parsed

    def check_address(self, ip: IPAddress) -> None:
        if (why := refusal(ip, self.allow_nets)) is not None:
            raise TargetRefused(f"{why}; webhooks may only call public addresses")

    async def check(self, url: str) -> URL:
        """The check at submit: the URL's form, and every address its host resolves to now."""
        parsed = self.check_url(url)
        host = parsed.raw_host or ""
        ip = literal(host)
        if ip is not None:
            self.check_address(ip)
            return parsed
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                found = await self.names().resolve(host, parsed.port or 0, socket.AF_UNSPEC)
        except (OSError, TimeoutError):
            found = []
        if not found:
            raise TargetRefused(f"{host} does not resolve")
        for result in found:
            self.check_address(_address(result))
        return parsed


def _address(result: ResolveResult) -> IPAddress:
    return ipaddress.ip_address(result["host"])


class GuardedResolver(AbstractResolver):
    """A resolver for the webhook client's connector: the policy's resolver's answers, less
    every address the policy refuses; TargetRefused when none is left. Each call resolves
    afresh (the connector must not cache: ``use_dns_cache=False``)."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.rstrip(".").lower()
        if name in METADATA_NAMES or name.endswith(".localhost"):
            raise TargetRefused(f"{name} is a local or metadata name")
        found = await self.policy.names().resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for result in found:
            why = refusal(_address(result), self.policy.allow_nets)
            if why is None:
                allowed.append(result)
            else:
                refused.append(why)
        if not allowed:
            reasons = "; ".join(refused) or "no address"
            raise TargetRefused(f"{host} resolves to no public address ({reasons})")
        return allowed

    async def close(self) -> None:
        """Nothing to release: the policy's resolver is the policy's."""
