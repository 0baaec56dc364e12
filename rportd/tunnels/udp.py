"""UDP tunnels: one ``rport`` channel (``host:port/udp``) carrying a gob stream (§6.1).

Each datagram received on the server socket goes to the client as a
``UDPMessage`` whose ``Addr`` is the datagram's source; replies come back with
that ``Addr`` echoed and are sent from the server socket to it. Datagrams from
sources outside the ACL are dropped, and so are datagrams arriving while the
channel cannot take more (UDP may lose packets; the server must not buffer
without bound).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

import asyncssh

from rportd.tunnels.acl import TunnelACL
from rportd.tunnels.gob import GobDecoder, GobEncoder, GobError, UDPAddr, UDPMessage
from rportd.tunnels.tcp import ChannelOpener

log = logging.getLogger(__name__)

MAX_DATAGRAM = 9012
"""Upstream reads at most this many bytes per datagram."""
PEER_CACHE_SIZE = 1024
"""Senders (and reply addresses) whose conversions a UDP tunnel keeps."""


class _UDPChannelSide(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, forwarder: UDPForwarder) -> None:
        self.forwarder = forwarder

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.forwarder.replies_received(data)

    def eof_received(self) -> bool:
        self.forwarder.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.forwarder.close()

    def pause_writing(self) -> None:
        self.forwarder.channel_full = True

    def resume_writing(self) -> None:
        self.forwarder.channel_full = False


class _UDPSocket(asyncio.DatagramProtocol):
    def __init__(self, forwarder: UDPForwarder) -> None:
        self.forwarder = forwarder

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.forwarder.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("tunnel %s: UDP error: %s", self.forwarder.name, exc)


def _udp_addr(addr: Any) -> UDPAddr:
    host, port = str(addr[0]), int(addr[1])
    host, _, zone = host.partition("%")
    return UDPAddr(ipaddress.ip_address(host).packed, port, zone)


class UDPForwarder:
    """The server-side UDP socket of a tunnel and its gob channel."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        destination: str,
        opener: ChannelOpener,
        acl: Callable[[], TunnelACL | None],
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.destination = destination
        self.opener = opener
        self.acl = acl
        self.clock = clock
        self.last_activity = clock()
        self.channel_full = False
        self.dropped = 0
        self.sent = 0  # datagram bytes towards the client
        self.received = 0  # datagram bytes from the client
        self.closed = False
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._encoder = GobEncoder()
        self._decoder = GobDecoder()
        self._ipv6 = False
        # Peers are few and stay: their ACL verdict and converted addresses are kept.
        self._peers: dict[Any, UDPAddr | None] = {}  # socket address -> UDPAddr, None: refused
        self._peers_acl: TunnelACL | None = None
        self._reply_hosts: dict[tuple[bytes, str], str] = {}

    async def start(self) -> None:
        """Open the channel, then bind the socket (``OSError``/``asyncssh.Error`` on failure)."""
        chan, _ = await self.opener(
            f"{self.destination}/udp".encode(), lambda: _UDPChannelSide(self)
        )
        self._chan = chan
        if self.closed:
            chan.close()
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDPSocket(self), local_addr=(self.host, self.port)
            )
        except OSError:
            chan.close()
            raise
        if self.closed:
            transport.close()
            return
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._ipv6 = sock is not None and sock.family == socket.AF_INET6

    def last_active(self) -> float:
        return self.last_activity

    def _peer(self, addr: Any) -> UDPAddr | None:
        """The gob address of a sender, or None if the tunnel's ACL refuses it."""
        acl = self.acl()
        if acl is not self._peers_acl or len(self._peers) >= PEER_CACHE_SIZE:
            self._peers.clear()
            self._peers_acl = acl
        try:
            return self._peers[addr]
        except KeyError:
            pass
        peer = None if acl is not None and not acl.allows(str(addr[0])) else _udp_addr(addr)
        self._peers[addr] = peer
        return peer

    def _reply_host(self, ip_bytes: bytes, zone: str) -> str | None:
        """The host to send a reply to, in this socket's address family."""
        key = (ip_bytes, zone)
        host = self._reply_hosts.get(key)
        if host is not None:
            return host
        try:
            ip = ipaddress.ip_address(ip_bytes)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and not self._ipv6:
            ip = ip.ipv4_mapped
        elif isinstance(ip, ipaddress.IPv4Address) and self._ipv6:
            ip = ipaddress.IPv6Address(f"::ffff:{ip}")
        host = f"{ip}%{zone}" if zone else str(ip)
        if len(self._reply_hosts) >= PEER_CACHE_SIZE:
            self._reply_hosts.clear()
        self._reply_hosts[key] = host
        return host

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last_activity = self.clock()
        peer = self._peer(addr)
        if peer is None:
            log.debug("tunnel %s: datagram from %s rejected by ACL", self.name, addr[0])
            return
        chan = self._chan
        if chan is None or self.closed:
            return
        if self.channel_full:
            self.dropped += 1
            return
        message = UDPMessage(peer, data[:MAX_DATAGRAM])
        self.sent += len(message.data)
        try:
            chan.write(self._encoder.encode(message))
        except OSError:
            self.close()

    def replies_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except GobError as exc:
            log.warning("tunnel %s: bad UDP data from the client: %s", self.name, exc)
            self.close()
            return
        transport = self._transport
        if transport is None or self.closed:
            return
        for message in messages:
            self.last_activity = self.clock()
            if message.addr is None:
                continue
            host = self._reply_host(message.addr.ip, message.addr.zone)
            if host is not None:
                self.received += len(message.data)
                transport.sendto(message.data, (host, message.addr.port))

    def close(self) -> None:
        """Close the socket (port free at the next loop iteration) and the channel."""
        if self.closed:
            return
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        if self._chan is not None:
            self._chan.close()
