"""HTTP helpers shared by the client listener and the API: who the peer is."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from aiohttp import web

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyTrust:
    """The reverse proxies whose ``X-Forwarded-For`` is believed (``trusted_proxies``).

    Anyone can send the header, so it names the client only when the TCP peer is
    one of these proxies; from anyone else the peer itself is the client.
    """

    def __init__(self, networks: Iterable[str] = (), setting: str = "trusted_proxies") -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(text.strip(), strict=False) for text in networks
        )
        self.setting = setting
        self._warned: set[str] = set()

    def trusts(self, ip: str) -> bool:
        """Whether ``ip`` is a configured proxy."""
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def client_of(self, peer: str, forwarded_for: str) -> str:
        """The client address: walk ``X-Forwarded-For`` back from the peer past trusted hops."""
        if not self.trusts(peer):
            if forwarded_for:
                self._untrusted_forwarder(peer)
            return peer
        hops = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        client = peer
        for text in reversed(hops):
            try:
                ipaddress.ip_address(text)
            except ValueError:
                break  # garbage from an untrusted hop: stop at the last good address
            client = text
            if not self.trusts(text):
                break
        return client

    def _untrusted_forwarder(self, peer: str) -> None:
        """Say once when a local peer, likely a reverse proxy, forwards for others."""
        if peer in self._warned or len(self._warned) >= 100:
            return
        try:
            local = not ipaddress.ip_address(peer).is_global
        except ValueError:
            return
        if local:
            self._warned.add(peer)
            log.warning(
                "ignoring X-Forwarded-For from %s: if it is your reverse proxy, add it to %s "
                "(until then every client behind it shares its address, and its bans)",
                peer,
                self.setting,
            )


TRUST_KEY = web.AppKey("proxy_trust", ProxyTrust)
"""The :class:`ProxyTrust` of the application (none: no forwarding header is believed)."""

_NO_TRUST = ProxyTrust()


def peer_ip(request: web.BaseRequest) -> str:
    """The TCP peer's address."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else ""


def client_ip(request: web.Request) -> str:
    """The client's address: the peer, or what a trusted proxy says in ``X-Forwarded-For``."""
    trust = request.app.get(TRUST_KEY, _NO_TRUST)
    return trust.client_of(peer_ip(request), request.headers.get("X-Forwarded-For", ""))
