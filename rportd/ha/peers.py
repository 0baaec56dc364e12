"""Calls to the other nodes' APIs: probes, step-down, sync back, replication stream."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from rportd.ha import auth

log = logging.getLogger(__name__)

API = "/api/v1/ha"


@dataclass
class PeerView:
    """The last probe of a peer."""

    url: str
    reachable: bool = False
    answered: bool = False  # an HTTP answer came, even a refusal: the node is alive
    node_id: str = ""
    role: str = ""
    state: str = ""
    epoch: int = 0
    position: int = 0
    clients: int = 0
    serving: bool = False  # from heartbeats: admits clients
    waiting: int = 0  # from heartbeats: fleet clients knocking there
    fleet_generation: int = -1  # the generation of its fleet we hold
    link_up: bool = False  # from heartbeats: whether it hears from us too
    nonce: str = ""  # from its last heartbeat answer: our next request echoes it
    heartbeat_at: float = 0.0  # monotonic: when serving/waiting were last heard (0: never)
    checked_at: float = field(default_factory=time.monotonic)
    error: str = ""

    def read_node(self, body: dict[str, Any]) -> None:
        """Take what a node says about itself (``/ha/node``, heartbeats)."""
        self.node_id = str(body.get("node_id", ""))
        self.role = str(body.get("role", ""))
        self.state = str(body.get("state", ""))
        self.epoch = int(body.get("epoch", 0))
        self.position = int(body.get("position", 0))
        self.clients = int(body.get("clients", 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "node_id": self.node_id,
            "role": self.role,
            "state": self.state,
            "epoch": self.epoch,
            "position": self.position,
            "clients": self.clients,
            "serving": self.serving,
            "waiting": self.waiting,
            "error": self.error,
        }


def base_url(url: str) -> str:
    return url.rstrip("/")


class PeerClient:
    """Signed HTTP calls from this node to its peers."""

    def __init__(self, secret: str, identity: Callable[[], tuple[str, int]]) -> None:
        self._secret = secret
        self._identity = identity
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Peers commonly use self-signed certificates on their API; the HMAC, not
            # TLS, is what authenticates them.
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers(self, method: str, path: str) -> dict[str, str]:
        node_id, epoch = self._identity()
        return {auth.HEADER: auth.sign(self._secret, node_id, epoch, method, path)}

    def url(self, peer: str, path: str) -> str:
        return base_url(peer) + API + path

    async def call(
        self, method: str, peer: str, path: str, *, json: Any = None, timeout: float = 5.0
    ) -> tuple[int, Any]:
        """A signed request; returns ``(status, JSON body or None)``."""
        full = self.url(peer, path)
        headers = self.headers(method, URL(full).path)
        async with self.session.request(
            method, full, json=json, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body

    async def probe(self, peer: str, timeout: float = 1.0) -> PeerView:
        """What ``peer`` says about itself, or that it cannot be reached."""
        view = PeerView(url=peer)
        try:
            status, body = await self.call("GET", peer, "/node", timeout=timeout)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            view.error = str(exc) or type(exc).__name__
            return view
        except asyncio.CancelledError:
            raise
        view.answered = True
        data = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(data, dict):
            view.error = f"HTTP {status}: {error_text(body)}"
            return view
        view.reachable = True
        view.read_node(data)
        return view

    async def ws_connect(
        self, peer: str, path: str, params: dict[str, str]
    ) -> aiohttp.ClientWebSocketResponse:
        full = self.url(peer, path)
        return await self.session.ws_connect(
            full,
            params=params,
            headers=self.headers("GET", URL(full).path),
            heartbeat=None,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )


def error_text(body: Any) -> str:
    """The title of the first error in an API error envelope (empty if none)."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("title", ""))
    return ""
