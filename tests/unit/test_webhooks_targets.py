"""Which webhook URLs and addresses are refused (SSRF), at submit and through the resolver the
deliverer's connector uses. DNS is a table (`MapResolver`); nothing is resolved for real."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from listener.api.webhooks.targets import GuardedResolver, TargetPolicy, TargetRefused, refusal
from tests.webhookfakes import MapResolver

PUBLIC = "93.184.215.14"
HOSTS = {
    "public.example": [PUBLIC],
    "loopback.example": ["127.0.0.1"],
    "private.example": ["10.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "mixed.example": [PUBLIC, "192.168.1.20"],
    "v6.example": ["2606:4700:4700::1111"],
}

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fd00:ec2::254", "metadata"),
    ("::ffff:127.0.0.1", "stands for 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "stands for 10.0.0.1, a private"),
    ("::ffff:169.254.169.254", "stands for 169.254.169.254, the cloud metadata"),
    ("64:ff9b::a00:1", "stands for 10.0.0.1"),
    ("2002:c0a8:0101::1", "stands for 192.168.1.1"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "shared"),
    ("100.100.100.200", "shared"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.192", "reserved"),
    ("198.18.0.1", "private"),
    ("192.0.2.1", "private"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    found = refusal(ipaddress.ip_address(address))
    assert found is not None and why in found, found


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_are_let_through() -> None:
    allow = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    for address in ("127.0.0.1", "10.9.9.9", "::ffff:127.0.0.1"):
        assert refusal(ipaddress.ip_address(address), allow) is None, address
    assert refusal(ipaddress.ip_address("127.0.0.2"), allow) is not None
    assert refusal(ipaddress.ip_address("192.168.0.1"), allow) is not None


def policy(**kw: object) -> TargetPolicy:
    return TargetPolicy(resolver=MapResolver(HOSTS), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]:8443/hook", "loopback"),
        ("https://10.0.0.7/hook", "private"),
        ("https://172.16.5.4/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://100.64.0.1/hook", "shared"),
        ("https://loopback.example/hook", "loopback"),
        ("https://private.example/hook", "private"),
        ("https://metadata.example/hook", "metadata"),
        ("https://mapped.example/hook", "loopback"),
        ("https://mixed.example/hook", "private"),  # every address must pass
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata name"),
        ("https://localhost/hook", "metadata name"),
        ("https://api.localhost/hook", "metadata name"),
        ("https://unknown.example/hook", "does not resolve"),
        ("http://public.example/hook", "https URL is needed"),
        ("ftp://public.example/hook", "https URL is needed"),
        ("/relative/hook", "https URL is needed"),
        ("https://user:secret@public.example/hook", "user info"),
        ("https://user@public.example/hook", "user info"),
        ("https://public.example/" + "x" * 2048, "2048 characters"),
    ],
)
async def test_submit_refuses(url: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why.split()[0]) as caught:
        await policy().check(url)
    assert why in str(caught.value), caught.value


async def test_submit_accepts_public_https_urls() -> None:
    for url in (
        "https://public.example/hook?x=1",
        "https://public.example:8443/hook",
        "https://v6.example/hook",
        f"https://{PUBLIC}/hook",
        "https://[2606:4700:4700::1111]/hook",
    ):
        assert (await policy().check(url)).host


async def test_http_needs_the_setting_and_allowed_networks_pass() -> None:
    with pytest.raises(TargetRefused):
        await policy().check("http://public.example/hook")
    await policy(allow_http=True).check("http://public.example/hook")
    inside = policy(allow_nets=(ipaddress.ip_network("10.0.0.0/8"),))
    await inside.check("https://private.example/hook")
    await inside.check("https://10.200.0.1/hook")
    with pytest.raises(TargetRefused, match="loopback"):
        await inside.check("https://loopback.example/hook")


async def test_the_guarded_resolver_hands_out_only_allowed_addresses() -> None:
    guarded = GuardedResolver(policy())
    (only,) = await guarded.resolve("mixed.example", 443, socket.AF_UNSPEC)
    assert only["host"] == PUBLIC
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.1 is a private address"):
        await guarded.resolve("private.example", 443, socket.AF_UNSPEC)
    with pytest.raises(TargetRefused, match="metadata name"):
        await guarded.resolve("metadata.google.internal", 80, socket.AF_UNSPEC)
    with pytest.raises(OSError):
        await guarded.resolve("unknown.example", 443, socket.AF_UNSPEC)
