"""Tunnels (server-opened ``rport`` channels), ``tunnel_allowed`` rules, ``check_port``.

Mirrors protocol.md §5.2, §5.3 and §6.1: TCP channels dial the destination after
accepting and pipe both ways with back-pressure (no half-close, CHANNEL_CLOSE without
EOF); UDP channels carry a gob stream of ``UDPMessage`` in each direction with one
connected UDP socket per source address, dropped after 15 s without traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import asyncssh

from .gob import GobDecoder, GobEncoder, GobError, UDPAddr, UDPMessage

__all__ = [
    "TCPTunnelSession",
    "UDPTunnelSession",
    "check_port",
    "go_split_host_port",
    "lookup_ip",
    "parse_tunnel_allowed",
    "tunnel_is_allowed",
]

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]

UDP_IDLE_TIMEOUT = 15.0
UDP_MAX_READ = 9012

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


# --------------------------------------------------------------------------- addresses


def go_split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort`` (same error texts)."""

    def err(why: str) -> ValueError:
        return ValueError(f"address {hostport}: {why}")

    i = hostport.rfind(":")
    if i < 0:
        raise err("missing port in address")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise err("missing ']' in address")
        if end + 1 == len(hostport):
            raise err("missing port in address")
        if end + 1 != i:
            if hostport[end + 1] == ":":
                raise err("too many colons in address")
            raise err("missing port in address")
        host = hostport[1:end]
        if "[" in hostport[1:] or "]" in hostport[end + 1 :]:
            raise err("unexpected '[' in address")
    else:
        host = hostport[:i]
        if ":" in host:
            raise err("too many colons in address")
        if "[" in host:
            raise err("unexpected '[' in address")
        if "]" in host:
            raise err("unexpected ']' in address")
    return host, hostport[i + 1 :]


def _port_number(port: str, proto: str = "tcp") -> int:
    if port.isdigit():
        n = int(port)
        if n > 65535:
            raise ValueError(f"invalid port {port!r}")
        return n
    try:
        return socket.getservbyname(port, proto)
    except OSError:
        raise ValueError(f"lookup {proto}/{port}: unknown port") from None


async def lookup_ip(host: str) -> list[IPAddr]:
    """Go's ``net.LookupIP``: literal IPs are returned as is, names resolved."""
    literal = host.split("%", 1)[0]
    with contextlib.suppress(ValueError):
        return [ipaddress.ip_address(literal)]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host or "localhost", None, type=socket.SOCK_STREAM)
    except OSError:
        raise ValueError(f"lookup {host}: no such host") from None
    out: list[IPAddr] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def parse_tunnel_allowed(rule: str) -> tuple[IPNet | None, str]:
    """Parse one ``tunnel_allowed`` rule into (network or None, port or "")."""
    parts = rule.split(":")
    if len(parts) > 2:
        raise ValueError(f'invalid value: "{rule}"')
    port = parts[1] if len(parts) == 2 else ""
    net: IPNet | None = None
    if parts[0]:
        if "/" in parts[0]:
            try:
                net = ipaddress.ip_network(parts[0], strict=False)
            except ValueError:
                net = None
        if net is None:
            try:
                ip = ipaddress.ip_address(parts[0])
            except ValueError:
                if len(parts) == 1:
                    port = parts[0]
                else:
                    raise ValueError(f'invalid ip range: "{parts[0]}"') from None
            else:
                # Go uses a /32 mask even for IPv6 (which then never matches)
                net = ipaddress.ip_network(f"{ip}/32") if ip.version == 4 else _NEVER
    if port == "" and net is None:
        raise ValueError(f'empty value not allowed: "{rule}"')
    if port != "" and not port.lstrip("+-").isdigit():
        raise ValueError(f'invalid port: "{port}"')
    return net, port


_NEVER = ipaddress.ip_network("::/128")  # sentinel: an IPv6 literal rule matches nothing


def _net_contains(net: IPNet, ip: IPAddr) -> bool:
    if net is _NEVER:
        return False
    if net.version == 4 and ip.version == 6:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if mapped is None:
            return False
        ip = mapped
    if net.version != ip.version:
        return False
    return ip in net


async def tunnel_is_allowed(rules: list[str], remote: str) -> bool:
    """Client rule check of §5.3 (raises ValueError with Go-like texts)."""
    if not rules:
        return True
    host, port = go_split_host_port(remote)
    ips = await lookup_ip(host)
    parsed = [parse_tunnel_allowed(r) for r in rules]
    for ip in ips:
        if not any(
            (net is None or _net_contains(net, ip)) and (p == "" or p == port) for net, p in parsed
        ):
            return False
    return True


def _errno_text(exc: OSError) -> str:
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc).lower() or "connection failed"


async def _dial_tcp(
    hostport: str, timeout: float | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Go-like ``net.DialTimeout("tcp", ...)`` raising OSError with Go's text."""
    try:
        host, port_s = go_split_host_port(hostport)
    except ValueError as exc:
        raise OSError(f"dial tcp: {exc}") from None
    try:
        port = _port_number(port_s)
    except ValueError as exc:
        raise OSError(f"dial tcp: {exc}") from None
    try:
        ips = await lookup_ip(host)
    except ValueError as exc:
        raise OSError(f"dial tcp: {exc}") from None
    loop = asyncio.get_running_loop()
    deadline = None if not timeout else loop.time() + timeout
    last = ""
    for ip in ips:
        addr = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            raise OSError(f"dial tcp {addr}: i/o timeout")
        try:
            return await asyncio.wait_for(asyncio.open_connection(str(ip), port), remaining)
        except TimeoutError:
            raise OSError(f"dial tcp {addr}: i/o timeout") from None
        except OSError as exc:
            last = f"dial tcp {addr}: connect: {_errno_text(exc)}"
    raise OSError(last or f"dial tcp {hostport}: no addresses")


async def check_port(host_port: str, timeout_ns: int) -> tuple[bool, str]:
    """``check_port`` of §5.2: (open, Go error message)."""
    timeout = timeout_ns / 1e9 if timeout_ns > 0 else None
    try:
        _, writer = await _dial_tcp(host_port, timeout)
    except OSError as exc:
        return False, str(exc.args[0]) if exc.args else str(exc)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True, ""


# --------------------------------------------------------------------------- TCP


class _TCPSide(asyncio.Protocol):
    """Destination socket side of a TCP tunnel."""

    def __init__(self, tunnel: TCPTunnelSession) -> None:
        self.tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        chan = self.tunnel.chan
        if chan is not None and not self.tunnel.closed:
            self.tunnel.bytes_to_server += len(data)
            chan.write(data)

    def eof_received(self) -> bool:
        self.tunnel.shutdown()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.shutdown()

    def pause_writing(self) -> None:
        if self.tunnel.chan is not None:
            self.tunnel.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.tunnel.chan is not None:
            self.tunnel.chan.resume_reading()


class TCPTunnelSession(asyncssh.SSHTCPSession[bytes]):
    """A TCP tunnel: dial after accept, pipe both ways, EOF on either side closes both."""

    def __init__(self, host: str, port: str, spawn: Spawn, on_event: Callable[[str], None]) -> None:
        self.host = host
        self.port = port
        self._spawn = spawn
        self._event = on_event
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.tcp: asyncio.Transport | None = None
        self.closed = False
        self.bytes_to_server = 0
        self.bytes_to_dest = 0

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def session_started(self) -> None:
        self._spawn(self._dial())

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            port = _port_number(self.port)
            transport, _ = await loop.create_connection(lambda: _TCPSide(self), self.host, port)
        except (OSError, ValueError) as exc:
            self._event(f"tunnel dial {self.host}:{self.port} failed: {exc}")
            self.shutdown()
            return
        if self.closed:
            transport.close()
            return
        self.tcp = transport
        if self.chan is not None:
            self.chan.resume_reading()

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.tcp is not None and not self.closed:
            self.bytes_to_dest += len(data)
            self.tcp.write(data)

    def eof_received(self) -> bool:
        self.shutdown()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.shutdown()

    def pause_writing(self) -> None:
        if self.tcp is not None:
            self.tcp.pause_reading()

    def resume_writing(self) -> None:
        if self.tcp is not None and not self.tcp.is_closing():
            self.tcp.resume_reading()

    def shutdown(self) -> None:
        """Close both sides (TCP after flushing, channel with CLOSE and no EOF)."""
        if self.closed:
            return
        self.closed = True
        if self.tcp is not None:
            self.tcp.close()
        if self.chan is not None:
            self.chan.close()


# --------------------------------------------------------------------------- UDP


class _UDPSource(asyncio.DatagramProtocol):
    """A connected UDP socket for one source address of the server side."""

    def __init__(self, tunnel: UDPTunnelSession, addr: UDPAddr | None) -> None:
        self.tunnel = tunnel
        self.addr = addr
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_active = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last_active = time.monotonic()
        self.tunnel.reply(self, data[:UDP_MAX_READ])

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)

    def send(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UDPTunnelSession(asyncssh.SSHTCPSession[bytes]):
    """A UDP tunnel: gob ``UDPMessage`` stream, one socket per source address."""

    def __init__(self, host: str, port: str, spawn: Spawn, on_event: Callable[[str], None]) -> None:
        self.host = host
        self.port = port
        self._spawn = spawn
        self._event = on_event
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.decoder = GobDecoder()
        self.encoder = GobEncoder()
        self.sources: dict[tuple[bytes, int, str] | None, _UDPSource] = {}
        self.closed = False
        self.datagrams_forwarded = 0
        self.datagrams_returned = 0
        self._reaper: asyncio.Task[Any] | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def session_started(self) -> None:
        if self.chan is not None:
            self.chan.resume_reading()
        self._reaper = self._spawn(self._reap_idle())

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.closed:
            return
        try:
            msgs = self.decoder.feed_messages(data)
        except GobError as exc:
            self._event(f"udp tunnel {self.host}:{self.port}: gob decode error: {exc}")
            self.shutdown()
            return
        for m in msgs:
            self._forward(m)

    def _forward(self, m: UDPMessage) -> None:
        key = None if m.addr is None else (m.addr.ip, m.addr.port, m.addr.zone)
        src = self.sources.get(key)
        if src is None or src.closed:
            src = _UDPSource(self, m.addr)
            self.sources[key] = src
            self._spawn(self._open_source(src))
        self.datagrams_forwarded += 1
        src.send(m.data)

    async def _open_source(self, src: _UDPSource) -> None:
        loop = asyncio.get_running_loop()
        try:
            port = _port_number(self.port, "udp")
            await loop.create_datagram_endpoint(lambda: src, remote_addr=(self.host, port))
        except (OSError, ValueError) as exc:
            self._event(f"udp tunnel {self.host}:{self.port}: dial failed: {exc}")
            self.shutdown()
            return
        if self.closed or src.closed:
            src.close()
            return
        assert src.transport is not None
        for d in src.pending:
            src.transport.sendto(d)
        src.pending.clear()

    def reply(self, src: _UDPSource, data: bytes) -> None:
        """Send a destination reply back with the source Addr echoed byte for byte."""
        if self.closed or self.chan is None:
            return
        self.datagrams_returned += 1
        self.chan.write(self.encoder.encode(UDPMessage(addr=src.addr, data=data)))

    async def _reap_idle(self) -> None:
        while not self.closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key, src in list(self.sources.items()):
                if now - src.last_active >= UDP_IDLE_TIMEOUT:
                    src.close()
                    del self.sources[key]

    def eof_received(self) -> bool:
        self.shutdown()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Close the channel and every per-source socket."""
        if self.closed:
            return
        self.closed = True
        for src in self.sources.values():
            src.close()
        self.sources.clear()
        if self._reaper is not None:
            self._reaper.cancel()
        if self.chan is not None:
            self.chan.close()


def is_refused(exc: OSError) -> bool:
    """True for ECONNREFUSED."""
    return exc.errno == errno.ECONNREFUSED
