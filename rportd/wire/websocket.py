"""A server-side WebSocket presented to asyncssh as a byte-stream transport.

Incoming text and binary messages are one byte stream (protocol.md §2.7);
outgoing bytes become unmasked BINARY frames on the TCP transport, so asyncssh
can write synchronously as it does on a socket. Each write (asyncssh writes one
SSH packet at a time) is one frame, as with upstream's server; the frames
written during one event loop iteration go to the socket in one call at the end
of the iteration: one send per burst instead of one per packet. (Merging packets
into bigger frames costs the Go client more: it copies what each read leaves
of a message.)
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

_OP_BINARY = 0x82  # FIN + binary opcode
_OP_PING = 0x89  # FIN + ping opcode


def binary_frame_header(length: int) -> bytes:
    """The header of an unmasked, final BINARY frame carrying ``length`` bytes."""
    if length < 126:
        return bytes((_OP_BINARY, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _OP_BINARY, 126, length)
    return struct.pack("!BBQ", _OP_BINARY, 127, length)


class WebSocketTransport(asyncio.Transport):
    """Adapts an upgraded :class:`web.WebSocketResponse` to :class:`asyncio.Transport`."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        tcp: asyncio.Transport,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._info = dict(extra or {})
        self._ws = ws
        self._tcp = tcp
        self._closing = False
        self._protocol: asyncio.Protocol | None = None
        self._loop = asyncio.get_running_loop()
        self._pending: list[tuple[bytes, ...]] = []  # the parts of each frame
        self._pending_size = 0
        self.ping_answered_at = 0.0
        """Monotonic send time of the newest WebSocket ping the peer answered."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._info:
            return self._info[name]
        if name == "websocket":
            return self
        if name == "socket":
            return None  # keep asyncssh away from the real socket options
        return self._tcp.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing or self._tcp.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._tcp.is_closing() or not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((data if isinstance(data, bytes) else bytes(data),))
        self._pending_size += len(data)

    def _flush(self) -> None:
        """Frame and send what was written since the last flush."""
        pending, self._pending = self._pending, []
        self._pending_size = 0
        if not pending or self._tcp.is_closing():
            return
        out: list[bytes] = []
        for parts in pending:
            out.append(binary_frame_header(sum(map(len, parts))))
            out.extend(parts)
        self._tcp.write(b"".join(out))

    def writelines(self, list_of_data: Any) -> None:
        """Write the chunks as one frame (one SSH packet), without joining them first."""
        parts = tuple(d if isinstance(d, bytes) else bytes(d) for d in list_of_data)
        size = sum(map(len, parts))
        if self._closing or self._tcp.is_closing() or not size:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(parts)
        self._pending_size += size

    def can_write_eof(self) -> bool:
        return False  # a WebSocket cannot half-close (write_eof stays asyncio's default)

    def get_write_buffer_size(self) -> int:
        return self._tcp.get_write_buffer_size() + self._pending_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._tcp.pause_reading()

    def resume_reading(self) -> None:
        self._tcp.resume_reading()

    def is_reading(self) -> bool:
        return self._tcp.is_reading()

    def send_ping(self) -> None:
        """Send a WebSocket ping carrying its send time; :func:`pump` reads the pong."""
        if self._closing or self._ws.closed:
            return
        self._flush()
        payload = struct.pack("!Q", time.monotonic_ns())
        self._tcp.write(bytes((_OP_PING, len(payload))) + payload)

    def pong_received(self, payload: bytes) -> None:
        """A pong to one of our pings: note when that ping was sent."""
        if len(payload) == 8:
            sent = struct.unpack("!Q", payload)[0] / 1e9
            if sent <= time.monotonic():
                self.ping_answered_at = max(self.ping_answered_at, sent)

    def close(self) -> None:
        """Send what is pending, then close."""
        self._flush()
        self._closing = True
        self._tcp.close()

    def abort(self) -> None:
        self._pending, self._pending_size = [], 0
        self._closing = True
        self._tcp.abort()


async def pump(
    ws: web.WebSocketResponse,
    protocol: asyncio.Protocol,
    transport: WebSocketTransport | None = None,
) -> None:
    """Feed every received message to ``protocol`` until the WebSocket ends.

    With ``transport``, the WebSocket runs without autoping: pings are answered
    here and pongs reach :meth:`WebSocketTransport.pong_received`.
    """
    exc: Exception | None = None
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                protocol.data_received(msg.data)
            elif msg.type is WSMsgType.TEXT:
                protocol.data_received(msg.data.encode())
            elif msg.type is WSMsgType.PONG:
                if transport is not None:
                    transport.pong_received(msg.data)
            elif msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.ERROR:
                exc = (
                    msg.data if isinstance(msg.data, Exception) else ConnectionError(str(msg.data))
                )
                break
            else:  # CLOSE, CLOSING, CLOSED
                break
    except (ConnectionError, asyncio.CancelledError) as err:
        exc = err if isinstance(err, ConnectionError) else None
        if isinstance(err, asyncio.CancelledError):
            protocol.connection_lost(None)
            raise
    protocol.connection_lost(exc)
