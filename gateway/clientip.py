"""Who the client is: the connection's peer, or the address a trusted proxy says it forwarded for.

`X-Forwarded-For` is client-written text: anyone can send one. It is read only when the direct peer is one of
the configured proxies (`EMOTORCH_TRUSTED_PROXIES`, empty by default), and then only as IP addresses, walked
from the right (the hop the trusted proxy appended) past further trusted proxies to the first address that is
not one. The result is always a parsed IP address (at most 39 characters), never the header's text, so the
rate limiter's keys and the access log stay bounded whatever a client sends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"  # a peer without an address (a Unix socket, a test transport)
MAX_HOPS = 16  # forwarded entries examined from the right; a longer chain is not trusted further
MAX_FORWARDED_BYTES = 1024  # only the header's tail is decoded: the part the trusted proxies wrote
IPV6_CLIENT_PREFIX = 64  # one IPv6 subscriber usually holds a whole /64: it counts as one client


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The trusted proxies as networks (an address alone is a /32 or /128); raise ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def parse_ip(text: str) -> IPAddress | None:
    """An IP address, or None for anything else (names, ports, garbage, over-long text)."""
    text = text.strip()
    if not text or len(text) > 45:  # the longest textual IPv6 address (with an embedded IPv4) is 45 characters
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:1.2.3.4 is 1.2.3.4: one client, one key
    return address


def _trusted(address: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def forwarded_client(peer: IPAddress, forwarded_for: list[bytes], proxies: tuple[IPNetwork, ...]) -> IPAddress:
    """The client address: `peer` unless it is a trusted proxy, else the rightmost untrusted forwarded hop.

    A malformed hop stops the walk: what lies left of it was written by someone no trusted proxy vouches for,
    so the last address a trusted proxy did vouch for is the client.
    """
    if not proxies or not forwarded_for or not _trusted(peer, proxies):
        return peer
    tail = b",".join(forwarded_for)[-MAX_FORWARDED_BYTES:]
    hops = tail.decode("latin-1").split(",")
    if len(tail) == MAX_FORWARDED_BYTES:
        hops = hops[1:]  # the first entry may be cut in half
    client = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        address = parse_ip(hop)
        if address is None:
            break
        client = address
        if not _trusted(address, proxies):
            break
    return client


def client_key(client: str) -> str:
    """The rate limiter's key for a client address: the address, or its /64 for IPv6."""
    address = parse_ip(client)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address) if address is not None else UNKNOWN


class ClientAddress:
    """Set `scope["client"]` to the parsed client address before anything else reads it (outermost middleware)."""

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.proxies = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host, port = scope.get("client") or (UNKNOWN, 0)
            peer = parse_ip(str(host))
            if peer is None:
                scope["client"] = (UNKNOWN, 0)
            else:
                forwarded = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
                scope["client"] = (str(forwarded_client(peer, forwarded, self.proxies)), port)
        await self.app(scope, receive, send)
