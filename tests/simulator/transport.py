"""WebSocket transport of the client (gorilla/websocket behaviour, protocol.md §2).

* :func:`ws_connect` performs the upgrade exactly like the Go client (one subprotocol
  ``rport-v1``, ``User-Agent: rport <version>``, no compression).
* :class:`WSBridge` is an :class:`asyncio.Transport` feeding a protocol (asyncssh) from
  a client WebSocket: each protocol write becomes one BINARY message, optionally
  fragmented into 1024-byte frames like gorilla's write buffer (Appendix D); received
  text or binary messages are concatenated into one byte stream.
* :func:`open_raw` / :class:`RawWebSocket` give tests a bare WebSocket to send garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from typing import Any

import aiohttp

__all__ = [
    "RawWebSocket",
    "WSBridge",
    "build_frame",
    "http_request",
    "make_http_session",
    "open_raw",
    "ws_connect",
]

log = logging.getLogger(__name__)

SUBPROTOCOL = "rport-v1"
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2

_aiohttp_mask: Any
try:  # aiohttp's C accelerated masking (private but long-standing helper)
    from aiohttp._websocket.helpers import websocket_mask as _aiohttp_mask
except ImportError:  # pragma: no cover
    _aiohttp_mask = None

_rand = random.Random()


def _mask(mask: bytes, data: bytes) -> bytes:
    if _aiohttp_mask is not None:
        arr = bytearray(data)
        _aiohttp_mask(mask, arr)
        return bytes(arr)
    n = len(data)  # pragma: no cover
    key = (mask * (n // 4 + 1))[:n]  # pragma: no cover
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def build_frame(payload: bytes, opcode: int, *, fin: bool = True, mask: bool = True) -> bytes:
    """Serialise one WebSocket frame (client frames are masked)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, mbit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mbit | 127, n)
    if not mask:
        return header + payload
    key = struct.pack("!I", _rand.getrandbits(32))
    return header + key + _mask(key, payload)


def make_http_session(*, limit: int = 0) -> aiohttp.ClientSession:
    """A ClientSession suitable for (many) simulated clients."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=True),
        timeout=aiohttp.ClientTimeout(total=300),  # gorilla HandshakeTimeout 5 min
        skip_auto_headers=("Accept", "Accept-Encoding"),
    )


async def ws_connect(
    session: aiohttp.ClientSession,
    url: str,
    *,
    version: str = "0.9.14",
    headers: dict[str, str] | None = None,
    protocols: tuple[str, ...] = (SUBPROTOCOL,),
) -> aiohttp.ClientWebSocketResponse[Any]:
    """Open the WebSocket like the Go client (``ws``/``wss`` URL expected)."""
    hdrs = {"User-Agent": f"rport {version}"}
    if headers:
        hdrs.update(headers)
    return await session.ws_connect(
        url,
        protocols=protocols,
        headers=hdrs,
        compress=0,
        max_msg_size=0,
        autoping=True,
        autoclose=True,
        heartbeat=None,
        decode_text=False,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
    )


class WSBridge(asyncio.Transport):
    """asyncio Transport carrying a protocol's byte stream over a client WebSocket."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[Any],
        *,
        fragment_size: int | None = 1024,
    ) -> None:
        super().__init__()
        self._ws = ws
        self._raw: asyncio.Transport = ws._writer.transport
        self._fragment_size = fragment_size
        self._protocol: asyncio.Protocol | None = None
        self._closing = False
        self._lost_notified = False
        self._pump_task: asyncio.Task[None] | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.frames_sent = 0

    # ---- wiring

    def start(self, protocol: asyncio.Protocol) -> None:
        """Attach ``protocol`` (calls ``connection_made``) and start reading."""
        self._protocol = protocol
        protocol.connection_made(self)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        exc: BaseException | None = None
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
                    self.bytes_received += len(data)
                    if self._protocol is not None and not self._lost_notified:
                        self._protocol.data_received(data)
                    continue
                if msg.type is aiohttp.WSMsgType.ERROR:
                    exc = msg.data if isinstance(msg.data, BaseException) else None
                break
        except asyncio.CancelledError:
            raise
        except Exception as e:
            exc = e
        finally:
            self._closing = True
            self._release()
            self._notify_lost(exc if isinstance(exc, Exception) else None)

    def _notify_lost(self, exc: Exception | None) -> None:
        if self._lost_notified:
            return
        self._lost_notified = True
        proto = self._protocol
        if proto is not None:
            try:
                proto.connection_lost(exc)
            except Exception:  # pragma: no cover
                log.exception("connection_lost failed")

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._ws._response.close()  # closes TCP without a close frame, like Go

    # ---- asyncio.Transport API

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one BINARY message (fragmented like gorilla if enabled)."""
        if self._closing or self._raw.is_closing():
            return
        data = bytes(data)
        size = self._fragment_size
        if not size or len(data) <= size:
            frames = build_frame(data, OP_BINARY)
            self.frames_sent += 1
        else:
            parts = []
            for off in range(0, len(data), size):
                chunk = data[off : off + size]
                last = off + size >= len(data)
                parts.append(build_frame(chunk, OP_BINARY if off == 0 else OP_CONT, fin=last))
            self.frames_sent += len(parts)
            frames = b"".join(parts)
        self.messages_sent += 1
        self.bytes_sent += len(data)
        self._raw.write(frames)

    def writelines(self, list_of_data: Any) -> None:
        """Write each buffer as its own message."""
        for d in list_of_data:
            self.write(d)

    def can_write_eof(self) -> bool:
        """No half-close over WebSocket."""
        return False

    def write_eof(self) -> None:
        """Not supported; closes instead."""
        self.close()

    def is_closing(self) -> bool:
        """True once closed (locally or by the peer)."""
        return self._closing

    def close(self) -> None:
        """Close the TCP connection (no WebSocket close frame, like ``wsConn.Close``)."""
        if self._closing:
            return
        self._closing = True
        self._release()

    def abort(self) -> None:
        """Same as :meth:`close` (asyncssh calls abort when it closes)."""
        self.close()

    def get_write_buffer_size(self) -> int:
        """Bytes buffered in the underlying TCP transport."""
        return self._raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Delegate to the TCP transport."""
        self._raw.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        """Not needed: the protocol consumes synchronously."""

    def resume_reading(self) -> None:
        """Not needed."""

    def is_reading(self) -> bool:
        """Always reading while open."""
        return not self._closing

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The attached protocol."""
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Replace the attached protocol."""
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """peername/sockname of the TCP connection; never exposes the socket."""
        if name == "socket":
            return None
        return self._raw.get_extra_info(name, default)

    async def aclose(self) -> None:
        """Close and wait for the reader task to finish."""
        self.close()
        task = self._pump_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._notify_lost(None)

    def cancel_pump(self) -> None:
        """Cancel the reader task (used by hard stops)."""
        self.close()
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()


class RawWebSocket:
    """A bare client WebSocket for tests that need to send arbitrary bytes."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[Any],
        session: aiohttp.ClientSession | None,
    ) -> None:
        self.ws = ws
        self._own_session = session
        self._buf = b""

    @property
    def protocol(self) -> str | None:
        """Subprotocol echoed by the server (may be None)."""
        return self.ws.protocol

    async def send(self, data: bytes, *, fragment_size: int | None = None) -> None:
        """Send one BINARY message (optionally fragmented)."""
        if fragment_size:
            raw: asyncio.Transport = self.ws._writer.transport
            for off in range(0, max(len(data), 1), fragment_size):
                chunk = data[off : off + fragment_size]
                op = OP_BINARY if off == 0 else OP_CONT
                raw.write(build_frame(chunk, op, fin=off + fragment_size >= len(data)))
            return
        await self.ws.send_bytes(data)

    async def send_text(self, text: str) -> None:
        """Send one TEXT message."""
        await self.ws.send_str(text)

    async def recv(self, timeout: float = 10.0) -> bytes | None:
        """Next data message payload, or None when the connection closed."""
        if self._buf:
            out, self._buf = self._buf, b""
            return out
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            return msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
        return None

    async def read_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Read the byte stream until ``needle`` is seen; returns everything up to it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self._buf:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{needle!r} not received")
            msg = await self.ws.receive(timeout=remaining)
            if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                raise ConnectionError("websocket closed")
            self._buf += msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
        idx = self._buf.index(needle) + len(needle)
        out, self._buf = self._buf[:idx], self._buf[idx:]
        return out

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the server closes the connection (data is discarded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("connection not closed")
            msg = await self.ws.receive(timeout=remaining)
            if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                return

    async def close(self, *, abrupt: bool = True) -> None:
        """Close (abruptly = TCP close without close frame, like the Go client)."""
        if abrupt:
            with contextlib.suppress(Exception):
                self.ws._response.close()
        else:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None


async def open_raw(
    url: str,
    *,
    protocols: tuple[str, ...] = (SUBPROTOCOL,),
    headers: dict[str, str] | None = None,
    version: str = "0.9.14",
    http_session: aiohttp.ClientSession | None = None,
) -> RawWebSocket:
    """Open a bare WebSocket to ``url`` (raises ``aiohttp.WSServerHandshakeError``)."""
    from .config import normalize_server_url

    own = http_session is None
    session = make_http_session() if http_session is None else http_session
    try:
        ws = await ws_connect(
            session,
            normalize_server_url(url),
            version=version,
            headers=headers,
            protocols=protocols,
        )
    except BaseException:
        if own:
            await session.close()
        raise
    return RawWebSocket(ws, session if own else None)


async def http_request(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    http_session: aiohttp.ClientSession | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Plain HTTP request (``ws``→``http``); returns (status, headers, body)."""
    from .config import normalize_server_url

    u = normalize_server_url(url)
    u = "http" + u[2:] if u.startswith("ws") else u
    own = http_session is None
    session = make_http_session() if http_session is None else http_session
    try:
        async with session.request(method, u, headers=headers) as resp:
            body = await resp.read()
            return resp.status, dict(resp.headers), body
    finally:
        if own:
            await session.close()
