"""The HTTPS tunnel proxy (``http_proxy=true``; config.md ``tunnel_proxy_*``).

It listens on the tunnel's requested address with the ``[server]
tunnel_proxy_cert_file``/``key_file`` certificate and forwards to the real
tunnel, which listens on ``127.0.0.1`` only. It enforces the tunnel's ACL on
the peer address, optional basic auth and an optional Host header, as
upstream does. Schemes: ``http``/``https`` are reverse-proxied (WebSocket
upgrades included); ``vnc`` offers upstream's WebSocket-to-TCP bridge on
``/vnc`` (the noVNC web app itself is not served); ``rdp`` needs guacd, which
this server does not provide.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from rportd.cors import CorsPolicy, add_headers
from rportd.tunnels.acl import TunnelACL
from rportd.wire.messages import Remote

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)


def proxy_ssl_context(cert_file: str, key_file: str, tls_min: str) -> ssl.SSLContext:
    """The server TLS context of every tunnel proxy (blocking: call in a thread)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if tls_min == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _page(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=f"[{status}] Rport tunnel proxy: {message}",
        content_type="text/html",
        charset="UTF-8",
    )


def _forward_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], *, drop: frozenset[str]
) -> CIMultiDict[str]:
    """Copy headers minus hop-by-hop ones and those named in ``Connection``."""
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        low = key.lower()
        if low in _HOP_BY_HOP or low in named or low in drop:
            continue
        out.add(key, value)
    return out


def _basic_auth(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header, like Go's ``BasicAuth``."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class TunnelProxy:
    """The HTTP(S) front of one tunnel."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        target_port: int,
        remote: Remote,
        acl: Callable[[], TunnelACL | None],
        ssl_context: ssl.SSLContext | None,
        http: Callable[[], aiohttp.ClientSession],
        *,
        cors: CorsPolicy | None = None,
    ) -> None:
        self.name = name
        self.cors = cors
        self.host = host
        self.port = port
        self.target_port = target_port
        self.remote = remote
        self.acl = acl
        self.ssl_context = ssl_context
        self._http = http
        self._web: web.Server | None = None
        self._server: asyncio.Server | None = None

    @property
    def scheme(self) -> str:
        return self.remote.scheme or "http"

    async def start(self) -> None:
        """Listen (``OSError`` if the address cannot be bound)."""
        self._web = web.Server(self._handle, handler_cancellation=True, access_log=None)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._web, self.host, self.port, ssl=self.ssl_context, reuse_address=True
        )

    def close(self) -> None:
        """Stop listening and drop every connection; the port is free on return."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._web is not None:
            for conn in self._web.connections:
                conn.force_close()

    # --- requests -------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        acl = self.acl()
        # The peer address only: X-Forwarded-For would let anyone pass the ACL.
        if acl is not None and not (peer and acl.allows(str(peer[0]))):
            log.info("tunnel proxy %s: access rejected for %s", self.name, peer)
            return _page(403, "Access rejected by ACL")
        if self.cors is None:
            return await self._serve(request, CIMultiDict())
        if self.cors.is_preflight(request):
            return self.cors.preflight(request)
        headers = self.cors.actual_headers(request)
        response = await self._serve(request, headers)
        if not response.prepared:
            add_headers(response, headers)
        return response

    async def _serve(
        self, request: web.BaseRequest, cors_headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        """Answer a request the ACL let through; ``cors_headers`` go on a proxied answer."""
        scheme = self.scheme
        if scheme in ("http", "https"):
            if not self._authorized(request):
                return web.Response(
                    status=401,
                    text="Unauthorized\n",
                    headers={
                        "WWW-Authenticate": 'Basic realm="restricted", charset="UTF-8"',
                        "X-Content-Type-Options": "nosniff",
                    },
                )
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._proxy_websocket(request, scheme)
            return await self._proxy_http(request, scheme, cors_headers)
        if scheme == "vnc":
            if request.path == "/vnc":
                return await self._vnc_bridge(request)
            return _page(
                404,
                "the noVNC web app is not served by this server; "
                "point a noVNC client at the WebSocket on /vnc",
            )
        return _page(501, "RDP through the tunnel proxy needs guacd, which this server lacks")

    def _authorized(self, request: web.BaseRequest) -> bool:
        user, password = self.remote.auth_user, self.remote.auth_password
        if not (user and password):
            return True
        given = _basic_auth(request.headers.get("Authorization", ""))
        if given is None:
            return False
        user_ok = hmac.compare_digest(given[0].encode(), user.encode())
        password_ok = hmac.compare_digest(given[1].encode(), password.encode())
        return user_ok and password_ok

    def _target(self, request: web.BaseRequest, scheme: str) -> URL:
        return URL(f"{scheme}://127.0.0.1:{self.target_port}{request.raw_path}", encoded=True)

    def _upstream_headers(self, request: web.BaseRequest, drop: frozenset[str]) -> CIMultiDict[str]:
        headers = _forward_headers(request.headers, drop=drop | {"host"})
        headers["Host"] = self.remote.host_header or request.host
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            prior = request.headers.get("X-Forwarded-For")
            headers["X-Forwarded-For"] = f"{prior}, {peer[0]}" if prior else str(peer[0])
        return headers

    async def _proxy_http(
        self, request: web.BaseRequest, scheme: str, cors_headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        headers = self._upstream_headers(request, frozenset())
        body = request.content if request.body_exists else None
        try:
            async with self._http().request(
                request.method,
                self._target(request, scheme),
                headers=headers,
                data=body,
                allow_redirects=False,
                ssl=False,
            ) as upstream:
                out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                out.headers.update(
                    _forward_headers(upstream.headers, drop=frozenset({"content-length"}))
                )
                add_headers(out, cors_headers)
                if upstream.content_length is not None:
                    out.content_length = upstream.content_length
                await out.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info("tunnel proxy %s: %s", self.name, exc)
            return _page(500, str(exc) or type(exc).__name__)

    async def _proxy_websocket(self, request: web.BaseRequest, scheme: str) -> web.StreamResponse:
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        target = self._target(request, "wss" if scheme == "https" else "ws")
        try:
            backend = await self._http().ws_connect(
                target,
                headers=self._upstream_headers(request, _WS_HANDSHAKE),
                protocols=protocols,
                ssl=False,
                autoping=False,
            )
        except (aiohttp.ClientError, OSError) as exc:
            return _page(500, str(exc) or type(exc).__name__)
        async with backend:
            front = web.WebSocketResponse(
                protocols=(backend.protocol,) if backend.protocol else (), autoping=False
            )
            await front.prepare(request)
            await _relay_websockets(front, backend)
            return front

    async def _vnc_bridge(self, request: web.BaseRequest) -> web.StreamResponse:
        """Upstream's websockify: binary WebSocket messages <-> the tunnel's TCP stream."""
        front = web.WebSocketResponse(protocols=("binary",))
        await front.prepare(request)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError as exc:
            await front.send_str(f"tcp dialing failed: {exc}")
            await front.close()
            return front

        async def to_tcp() -> None:
            async for msg in front:
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    writer.write(data)
                    await writer.drain()

        async def to_ws() -> None:
            while data := await reader.read(65536):
                await front.send_bytes(data)

        try:
            await _first_done(to_tcp(), to_ws())
        finally:
            writer.close()
            await front.close()
        return front


async def _first_done(*coros: Coroutine[Any, Any, None]) -> None:
    """Run coroutines until the first ends; cancel and await the rest."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _relay_websockets(
    front: web.WebSocketResponse, backend: aiohttp.ClientWebSocketResponse
) -> None:
    async def pump(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in source:
            if msg.type is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type is WSMsgType.PONG:
                await sink.pong(msg.data)
        await sink.close()

    await _first_done(pump(front, backend), pump(backend, front))
