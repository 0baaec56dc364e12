"""TCP tunnels: a server listener, one ``rport`` channel per accepted connection (§6.1).

Bytes are piped verbatim both ways with back-pressure in each direction: when
the channel's send buffer passes its high-water mark the TCP socket stops being
read, and when the TCP socket's write buffer does, the channel stops being read
(so its SSH window is not replenished and the client stops sending). Either side
ending tears down both, as upstream does (no half-close).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

import asyncssh

from rportd.tunnels.acl import TunnelACL

log = logging.getLogger(__name__)

ChannelOpener = Callable[
    [bytes, Callable[[], asyncssh.SSHTCPSession[bytes]]],
    Awaitable[tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]],
]
"""Opens an ``rport`` channel to the client with raw extra data (``host:port``)."""


class _ChannelSide(asyncssh.SSHTCPSession[bytes]):
    """The SSH channel end of one piped connection."""

    def __init__(self, pipe: TCPPipe) -> None:
        self.pipe = pipe

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.pipe.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        pipe = self.pipe
        if pipe.tcp is not None and not pipe.closed:
            pipe.received += len(data)
            pipe.tcp.write(data)

    def eof_received(self) -> bool:
        self.pipe.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close()

    def pause_writing(self) -> None:
        if self.pipe.tcp is not None:
            self.pipe.tcp.pause_reading()

    def resume_writing(self) -> None:
        tcp = self.pipe.tcp
        if tcp is not None and not tcp.is_closing() and self.pipe.chan is not None:
            tcp.resume_reading()


class TCPPipe(asyncio.Protocol):
    """One accepted TCP connection and its channel."""

    def __init__(self, forwarder: TCPForwarder) -> None:
        self.forwarder = forwarder
        self.tcp: asyncio.Transport | None = None
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.closed = False
        self.sent = 0
        self.received = 0
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.tcp = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        acl = self.forwarder.acl()
        if acl is not None and not acl.allows(self.peer):
            log.debug("tunnel %s: access rejected for %s", self.forwarder.name, self.peer)
            self.closed = True
            transport.abort()
            return
        transport.pause_reading()  # nothing is read before the channel is open
        self.forwarder.connection_opened(self)

    async def open_channel(self) -> None:
        """Open the channel to the client; close the socket if that fails."""
        fwd = self.forwarder
        try:
            chan, _ = await fwd.opener(fwd.destination, lambda: _ChannelSide(self))
        except (asyncssh.Error, OSError) as exc:
            log.info("tunnel %s: could not open a channel to the client: %s", fwd.name, exc)
            self.close()
            return
        if self.closed:
            chan.close()
            return
        self.chan = chan
        if self.tcp is not None and not self.tcp.is_closing():
            self.tcp.resume_reading()

    def data_received(self, data: bytes) -> None:
        chan = self.chan
        if chan is None or self.closed:
            return
        self.sent += len(data)
        try:
            chan.write(data)
        except OSError:
            self.close()

    def eof_received(self) -> bool:
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:
        if self.chan is not None:
            self.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.chan is not None:
            self.chan.resume_reading()

    def close(self) -> None:
        """End both sides, flushing what is already buffered."""
        if self.closed:
            return
        self.closed = True
        if self.tcp is not None:
            self.tcp.close()
        if self.chan is not None:
            self.chan.close()
        self.forwarder.connection_closed(self)

    def abort(self) -> None:
        """End both sides now (forced termination)."""
        if self.tcp is not None:
            self.tcp.abort()
        if self.chan is not None:
            self.chan.abort()
        self.close()


class TCPForwarder:
    """The server-side TCP listener of a tunnel."""

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
        self.destination = destination.encode()
        self.opener = opener
        self.acl = acl
        self.clock = clock
        self.connections: set[TCPPipe] = set()
        self.closed_sent = 0  # bytes towards the client of connections already closed
        self.closed_received = 0
        self.last_close = -math.inf  # a never used tunnel is idle since forever (upstream)
        self._server: asyncio.Server | None = None
        self._opening: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; ``OSError`` if the address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TCPPipe(self), self.host, self.port, reuse_address=True, backlog=1024
        )

    @property
    def active(self) -> int:
        return len(self.connections)

    def last_active(self) -> float:
        """Now while a connection is open, else when the last one closed."""
        return self.clock() if self.connections else self.last_close

    def connection_opened(self, pipe: TCPPipe) -> None:
        self.connections.add(pipe)
        task = asyncio.get_running_loop().create_task(pipe.open_channel())
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    def connection_closed(self, pipe: TCPPipe) -> None:
        if pipe in self.connections:
            self.connections.discard(pipe)
            self.closed_sent += pipe.sent
            self.closed_received += pipe.received
            self.last_close = self.clock()

    def traffic(self) -> tuple[int, int]:
        """Bytes (towards the client, from the client) through this listener so far."""
        sent, received = self.closed_sent, self.closed_received
        for pipe in self.connections:
            sent += pipe.sent
            received += pipe.received
        return sent, received

    def close(self) -> None:
        """Stop listening and end every connection now; the port is free on return.

        Channels still being opened are closed as soon as the client confirms them
        (cancelling the open would leave the channel open on the client).
        """
        if self._server is not None:
            self._server.close()
            self._server = None
        for pipe in list(self.connections):
            pipe.abort()

    def cancel_pending(self) -> None:
        """Give up on channels still being opened (the SSH connection is going away)."""
        for task in list(self._opening):
            task.cancel()
