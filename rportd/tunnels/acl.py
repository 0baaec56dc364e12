"""Tunnel ACLs: which source IPs may use a tunnel's server-side listener (protocol.md §6.5)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ACLError(ValueError):
    """An ACL item that is not an IP or CIDR; the text is upstream's wording."""


def _unmapped(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 addresses compare as the IPv4 address (Go's ``net.IP``)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_ip(text: str) -> IPAddress | None:
    if "%" in text:  # zones are not IP addresses for Go's ParseIP
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _parse_item(text: str) -> IPNetwork:
    if "/" in text:
        addr, _, bits = text.partition("/")
        ip = _parse_ip(addr)
        if ip is None or not bits.isdigit() or int(bits) > ip.max_prefixlen:
            raise ACLError(f"invalid CIDR address: {text}")
        net: IPNetwork = ipaddress.ip_network(f"{ip}/{int(bits)}", strict=False)
    else:
        ip = _parse_ip(text)
        if ip is None:
            raise ACLError(f"invalid IP addr: {text}")
        net = ipaddress.ip_network(ip)
    if int(_unmapped(ip)) == 0:
        shown = "0.0.0.0" if _unmapped(ip).version == 4 else "::"
        raise ACLError(
            f"{shown} would allow access to everyone. If that's what you want, do not set the ACL"
        )
    if isinstance(net, ipaddress.IPv6Network) and ip.version == 6:
        mapped = _unmapped(ip)
        if mapped.version == 4 and net.prefixlen >= 96:
            net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    return net


@dataclass(frozen=True)
class TunnelACL:
    """Allowed source networks; empty means everyone."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> TunnelACL | None:
        """``"ip,cidr,..."`` (no spaces, as upstream); ``None``/empty = no ACL."""
        if not text:
            return None
        return cls(tuple(_parse_item(item) for item in text.split(",")))

    def allows(self, ip: str) -> bool:
        """Whether a connection or datagram from ``ip`` may pass."""
        if not self.networks:
            return True
        addr = _parse_ip(ip.split("%", 1)[0])
        if addr is None:
            return False
        addr = _unmapped(addr)
        return any(addr.version == net.version and addr in net for net in self.networks)


LOCALHOST_ONLY = TunnelACL((ipaddress.ip_network("127.0.0.1/32"),))
"""The ACL of the inner tunnel behind an HTTP proxy."""
