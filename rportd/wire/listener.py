"""The client listener: HTTP on ``[server] address``, WebSocket upgrade, SSH.

Only an upgrade offering subprotocol ``rport-v1`` becomes an SSH connection
(any path); anything else gets 404 or is reverse-proxied to ``[server] proxy``
(protocol.md §2.3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from rportd.httputil import client_ip
from rportd.metrics.instruments import Metrics
from rportd.wire.ssh import RportServerConnection
from rportd.wire.websocket import WebSocketTransport, pump

log = logging.getLogger(__name__)

SUBPROTOCOL = "rport-v1"
BANNED_TEXT = "Too many bad attempts. Please try later."
_HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
    )
)


def via_header(reason: str) -> str:
    """A ``Via`` value carrying ``reason`` as its comment."""
    comment = reason.replace("(", "[").replace(")", "]").encode("ascii", "replace").decode()
    return f"1.1 rportd ({comment})"


ConnectionFactory = Callable[[RportServerConnection, str], Any]
"""Builds the asyncssh owner (an ``SSHServer``) for a new connection and client IP."""


class ClientListener:
    """Serves RPort clients: WebSocket upgrade, then SSH on the byte stream."""

    def __init__(
        self,
        ssh_options: Any,
        connection_factory: ConnectionFactory,
        *,
        is_banned: Callable[[str], bool],
        max_concurrent_handshakes: int,
        handshake_timeout: float = 60.0,
        proxy_url: str = "",
        admission: Callable[[], str | None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._ssh_options = ssh_options
        self._connection_factory = connection_factory
        self._is_banned = is_banned
        self._handshakes = asyncio.Semaphore(max(1, max_concurrent_handshakes))
        self._handshake_timeout = handshake_timeout
        self._proxy_url = proxy_url.rstrip("/")
        self._proxy_session: aiohttp.ClientSession | None = None
        self._admission = admission
        self._connections: set[RportServerConnection] = set()
        self.metrics = metrics or Metrics()
        self.handshakes_in_progress = 0
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.on_shutdown.append(self._on_shutdown)

    @property
    def connection_count(self) -> int:
        """SSH connections currently open on this listener."""
        return len(self._connections)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ip = client_ip(request)
        if self._is_banned(ip):
            self.metrics.client_refused.labels("banned").inc()
            return web.Response(status=423, text=BANNED_TEXT)
        refusal = self._admission() if self._admission else None
        # After a refused upgrade the client sends HEAD and logs any Via header as an
        # error: that is how the reason for a refusal reaches the client's log.
        headers = {"Via": via_header(refusal)} if refusal else None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            if offered.startswith("rport-"):
                if offered == SUBPROTOCOL:
                    if refusal:
                        # A refused upgrade makes the client try its next server (§9).
                        log.debug("refusing client connection from %s: %s", ip, refusal)
                        self.metrics.client_refused.labels(refusal.partition(":")[0]).inc()
                        return web.Response(status=503, text=refusal, headers=headers)
                    return await self._serve_client(request, ip)
                log.info("ignored client connection using protocol %s", offered)
        if self._proxy_url:
            return await self._proxy(request)
        return web.Response(status=404, headers=headers)

    async def _serve_client(self, request: web.Request, ip: str) -> web.StreamResponse:
        await self._handshakes.acquire()
        self.handshakes_in_progress += 1
        released = False

        def release(_: object = None) -> None:
            nonlocal released
            if not released:
                released = True
                self.handshakes_in_progress -= 1
                self._handshakes.release()

        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,), max_msg_size=0, compress=False, autoping=False
        )
        try:
            await ws.prepare(request)
        except Exception:
            release()
            raise
        tcp = request.transport
        assert tcp is not None
        loop = asyncio.get_running_loop()
        conn = RportServerConnection(loop, self._ssh_options)
        owner = self._connection_factory(conn, ip)
        conn._protocol_factory = lambda: owner
        handshake_done: asyncio.Future[None] = loop.create_future()
        owner.handshake_done = handshake_done
        handshake_done.add_done_callback(release)
        timer = loop.call_later(self._handshake_timeout, self._handshake_expired, conn, ip)
        handshake_done.add_done_callback(lambda _: timer.cancel())
        transport = WebSocketTransport(ws, tcp, {"remote_ip": ip})
        self._connections.add(conn)
        try:
            conn.connection_made(transport)
            await pump(ws, conn, transport)
        finally:
            self._connections.discard(conn)
            if not handshake_done.done():
                handshake_done.set_result(None)
            transport.abort()
        return ws

    def _handshake_expired(self, conn: RportServerConnection, ip: str) -> None:
        self.metrics.client_refused.labels("handshake_timeout").inc()
        log.info("closing client connection from %s: SSH handshake took too long", ip)
        conn.abort()

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        if self._proxy_session is None:
            self._proxy_session = aiohttp.ClientSession(auto_decompress=False)
        target = self._proxy_url + request.rel_url.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with self._proxy_session.request(
                request.method,
                target,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as upstream:
                body = await upstream.read()
                out_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
                }
                out_headers.pop("Content-Length", None)
                return web.Response(status=upstream.status, body=body, headers=out_headers)
        except aiohttp.ClientError as exc:
            log.warning("client listener proxy to %s failed: %s", self._proxy_url, exc)
            return web.Response(status=502)

    def close_all(self) -> None:
        """Abort every client connection (they reconnect elsewhere or later)."""
        for conn in list(self._connections):
            conn.abort()

    async def _on_shutdown(self, _app: web.Application) -> None:
        self.close_all()
        if self._proxy_session is not None:
            await self._proxy_session.close()
