"""Where a completion callback may be sent: the rule against server-side request forgery, in one place.

Checked twice: on the URL when a job is created (literal addresses and known names, a 400 naming callback_url),
and on every address the host resolves to just before sending (a name may point anywhere), by the sender.
Always refused: link-local addresses (the metadata server lives at 169.254.169.254 and fd00:ec2::254), the
metadata names, multicast, unspecified and reserved ranges, and any of those hidden inside an IPv6 address
(IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64). Loopback and private ranges only where the policy allows.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "metadata.internal"})
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "fd20:ce::254"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_PART = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")


@dataclass(frozen=True)
class CallbackPolicy:
    """allow_loopback: the embedded server's user's own webhook on this machine. allow_private: an operator's
    choice for receivers inside their network (CALLBACK_ALLOW_PRIVATE)."""

    allow_loopback: bool = False
    allow_private: bool = False


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """What inet_aton (and so most HTTP clients) accept: 1 to 4 parts, each decimal, octal (0…) or hex (0x…):
    2852039166, 0xa9fea9fe, 0251.0376.0251.0376 and 169.254.43518 are all 169.254.169.254."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(part) for part in parts):
        return None
    try:
        numbers = [int(part, 16) if part.startswith("0x") else int(part, 8) if part.startswith("0") and part != "0"
                   else int(part) for part in parts]
    except ValueError:  # "0x" alone
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host spells out, in any form a client would accept; None for a name."""
    host = host.strip("[]").split("%", 1)[0]  # an IPv6 zone id says which interface, not which address
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host.lower())


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routed)
        return ipaddress.IPv4Address(int(address))
    return None


def address_refusal(address: IPAddress, policy: CallbackPolicy) -> str | None:
    """Why a callback may not go to this address, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return address_refusal(inner, policy)
    if address.is_loopback:
        return None if policy.allow_loopback or policy.allow_private else \
            "a loopback address: callbacks go to a host other services can reach"
    if address in METADATA_ADDRESSES or address.is_link_local or address.is_multicast or address.is_unspecified or \
            address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
        return "a link-local, metadata, multicast or reserved address is never a callback's"
    if not address.is_global:
        return None if policy.allow_private else \
            "a private address: the operator has not allowed callbacks into private networks"
    return None


def name_refusal(host: str, policy: CallbackPolicy) -> str | None:
    """Why a callback may not go to this host (a name or a literal address), before any lookup."""
    host = host.lower().rstrip(".")
    address = literal_address(host)
    if address is not None:
        return address_refusal(address, policy)
    if host in METADATA_NAMES:
        return "the metadata server is never a callback's"
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return address_refusal(ipaddress.IPv4Address("127.0.0.1"), policy)
    return None


def url_refusal(url: str, policy: CallbackPolicy) -> str | None:
    """Why this callback URL is refused, or None. Only http(s), a host, no credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    refusal = name_refusal(parts.hostname, policy)
    return None if refusal is None else f"{parts.hostname}: {refusal}"
