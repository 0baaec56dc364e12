"""The client listener: HTTP on ``[server] address``, WebSocket upgrade, SSH.

Only an upgrade offering subprotocol ``rport-v1`` becomes an SSH connection
(any path); anything else gets 404 or is reverse-proxied to ``[server] proxy``
(protocol.md §2.3).

Before login a peer is held to little: each handshake stage (SSH version, key
exchange, login) must finish within ``stage_timeout``, at most
``max_pending``/``max_pending_per_ip`` upgrades may be short of login at once,
and WebSocket messages and SSH packets are capped at :data:`PREAUTH_MAX_MESSAGE`
and :data:`PREAUTH_MAX_PACKET`. A handshake slot (``max_concurrent_ssh_handshakes``)
is taken only once the peer has sent its first bytes, so silent upgrades
hold none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from rportd.httputil import TRUST_KEY, ProxyTrust, client_ip
from rportd.metrics.instruments import Metrics
from rportd.netlimits import EVICT_GRACE, ListenerLimits, OldestFirst, RateLimitedLog
from rportd.wire.ssh import MAX_RECV_PACKET, PREAUTH_MAX_PACKET, RportServerConnection
from rportd.wire.websocket import BoundedWebSocket, WebSocketTransport, pump

log = logging.getLogger(__name__)

SUBPROTOCOL = "rport-v1"
BANNED_TEXT = "Too many bad attempts. Please try later."
FRAMING = 8 * 1024
"""Room for an SSH packet's length, padding and MAC, and a few small packets beside it."""
PREAUTH_MAX_MESSAGE = PREAUTH_MAX_PACKET + FRAMING
MAX_MESSAGE = MAX_RECV_PACKET + FRAMING
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


@dataclass(frozen=True, slots=True)
class HandshakeLimits:
    """Pre-login limits of the client listener."""

    max_concurrent: int
    """Handshakes doing work at once (``max_concurrent_ssh_handshakes``)."""
    stage_timeout: float = 20.0
    """Seconds allowed for each stage: SSH version, key exchange, login."""
    pending: ListenerLimits = field(default_factory=ListenerLimits)
    """Caps on upgrades not logged in yet, in total and per source address."""


class ClientListener:
    """Serves RPort clients: WebSocket upgrade, then SSH on the byte stream."""

    def __init__(
        self,
        ssh_options: Any,
        connection_factory: ConnectionFactory,
        *,
        is_banned: Callable[[str], bool],
        limits: HandshakeLimits,
        trust: ProxyTrust | None = None,
        proxy_url: str = "",
        admission: Callable[[], str | None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._ssh_options = ssh_options
        self._connection_factory = connection_factory
        self._is_banned = is_banned
        self.limits = limits
        self._handshakes = asyncio.Semaphore(max(1, limits.max_concurrent))
        self._pending = OldestFirst()
        self._refusals = RateLimitedLog(log)
        self._proxy_url = proxy_url.rstrip("/")
        self._proxy_session: aiohttp.ClientSession | None = None
        self._admission = admission
        self._connections: set[RportServerConnection] = set()
        self.metrics = metrics or Metrics()
        self.handshakes_in_progress = 0
        self.app = web.Application(client_max_size=64 * 1024)
        self.app[TRUST_KEY] = trust or ProxyTrust()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.on_shutdown.append(self._on_shutdown)

    @property
    def pending_handshakes(self) -> int:
        """Upgraded connections not logged in yet."""
        return len(self._pending.all)

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
        loop = asyncio.get_running_loop()
        handshake_done: asyncio.Future[None] = loop.create_future()
        handshake = _Handshake(self, ip, handshake_done)
        if not self._admit(handshake):
            handshake.end()
            refusal = web.Response(status=503, text="too many pending connections, try later")
            refusal.force_close()
            return refusal
        try:
            return await self._run_ssh(request, ip, handshake)
        finally:
            if not handshake_done.done():
                handshake_done.set_result(None)
            handshake.end()

    async def _run_ssh(
        self, request: web.Request, ip: str, handshake: _Handshake
    ) -> web.StreamResponse:
        ws = BoundedWebSocket(
            protocols=(SUBPROTOCOL,),
            max_msg_size=PREAUTH_MAX_MESSAGE,
            compress=False,
            autoping=False,  # pump() answers pings; pongs reach the transport
        )
        await ws.prepare(request)
        tcp = request.transport
        assert tcp is not None
        conn = RportServerConnection(asyncio.get_running_loop(), self._ssh_options)
        owner = self._connection_factory(conn, ip)
        conn._protocol_factory = lambda: owner
        owner.handshake_done = handshake.done
        handshake.watch(conn, ws)
        transport = WebSocketTransport(ws, tcp, {"remote_ip": ip})
        self._connections.add(conn)
        try:
            conn.connection_made(transport)
            await pump(ws, conn, transport, before_first=handshake.take_slot)
        finally:
            self._connections.discard(conn)
            transport.abort()
        return ws

    def _admit(self, handshake: _Handshake) -> bool:
        """Count ``handshake`` as pending; make room by closing the oldest silent one."""
        ip, caps = handshake.ip, self.limits.pending
        self._pending.add(handshake, ip)
        per_ip = not self.app[TRUST_KEY].trusts(ip)
        victim = self._pending.over(
            ip, caps, per_ip=per_ip, grace=EVICT_GRACE, evictable=lambda h: h.silent
        )
        if victim is not None:
            victim.evict()
            return True
        from_ip = self._pending.count(ip)
        if len(self._pending.all) > caps.max_pending or (
            per_ip and from_ip > caps.max_pending_per_ip
        ):
            self._refusals.warning(
                "refusing client connection from %s: %d handshakes pending (%d from it)",
                ip,
                len(self._pending.all) - 1,
                from_ip - 1,
            )
            return False
        return True

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


class _Handshake:
    """One upgrade on its way to login: stage deadlines, slot and pending count."""

    def __init__(self, listener: ClientListener, ip: str, done: asyncio.Future[None]) -> None:
        self.listener = listener
        self.ip = ip
        self.done = done
        self.stage = "SSH version"
        self._conn: RportServerConnection | None = None
        self._ws: BoundedWebSocket | None = None
        self._slot = False
        self._ended = False
        self.silent = True
        """No byte from the peer yet."""
        self._timer: asyncio.TimerHandle | None = None
        done.add_done_callback(self._finished)

    def watch(self, conn: RportServerConnection, ws: BoundedWebSocket) -> None:
        """Start the first stage's clock on ``conn``."""
        self._conn, self._ws = conn, ws
        conn.handshake_progress = self._progressed
        if self._ended:  # evicted while upgrading
            asyncio.get_running_loop().call_soon(conn.abort)
            return
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.listener.limits.stage_timeout, self._expired)

    def _progressed(self, stage: str) -> None:
        if not self.done.done():
            self.stage = stage
            self._arm()

    def _expired(self) -> None:
        self._timer = None
        if self.done.done() or self._conn is None:
            return
        self.listener.metrics.client_refused.labels("handshake_timeout").inc()
        log.info(
            "closing client connection from %s: no %s within %gs",
            self.ip,
            self.stage,
            self.listener.limits.stage_timeout,
        )
        self._conn.abort()

    async def take_slot(self) -> None:
        """Wait for a handshake slot (the peer has sent its first bytes)."""
        self.silent = False
        if self._timer is not None:
            self._timer.cancel()  # waiting for a slot is our doing, not the peer's
            self._timer = None
        await self.listener._handshakes.acquire()
        if self.done.done():
            self.listener._handshakes.release()
            return
        self._slot = True
        self.listener.handshakes_in_progress += 1
        self._arm()

    def _finished(self, _: object) -> None:
        """Logged in (or gone): lift the pre-login limits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slot:
            self._slot = False
            self.listener.handshakes_in_progress -= 1
            self.listener._handshakes.release()
        conn, ws = self._conn, self._ws
        if conn is not None and ws is not None and conn.is_open and not self._ended:
            conn.logged_in()
            ws.raise_message_limit(MAX_MESSAGE)
        self.end()

    def evict(self) -> None:
        """Close a silent upgrade to make room for a newer one."""
        self.listener._refusals.warning(
            "closing client connection from %s: silent since its upgrade", self.ip
        )
        self.end()
        if self._conn is not None:
            self._conn.abort()

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self.listener._pending.remove(self)
