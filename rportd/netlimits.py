"""Limits on connections that have not proved anything yet, for both listeners.

A connection is *pending* from accept until its first complete request (the
client listener keeps an SSH upgrade pending until the SSH login succeeds, see
:mod:`rportd.wire.listener`). Pending connections are capped in total and per
source address, and a connection with no request in progress is closed after
``idle_timeout`` (that also ends requests whose headers trickle in). HTTP
mistakes of peers are logged as one rate-limited warning line, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from rportd.httputil import ProxyTrust

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What one listener allows before a peer has proved anything."""

    idle_timeout: float = 15.0
    max_pending: int = 1024
    max_pending_per_ip: int = 16


class RateLimitedLog:
    """Logs at most ``burst`` lines per ``period`` seconds for one kind of event."""

    def __init__(self, logger: logging.Logger, period: float = 10.0, burst: int = 5) -> None:
        self.logger = logger
        self.period = period
        self.burst = burst
        self._window_start = 0.0
        self._count = 0
        self._dropped = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.period:
            if self._dropped:
                self.logger.warning("(%d similar lines left out)", self._dropped)
            self._window_start, self._count, self._dropped = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            self.logger.warning(msg, *args)
        else:
            self._dropped += 1


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (aiohttp's HTTP errors span several)."""
    text = str(getattr(exc, "message", "") or exc)
    return " ".join(text.split()) or type(exc).__name__


_CLIENT_MISTAKES = (HttpProcessingError, ConnectionError, asyncio.TimeoutError)


class PeerErrorLogger(logging.Logger):
    """aiohttp's server logger: a peer's bad HTTP or dropped connection is one warning line.

    aiohttp logs those with a full traceback at ERROR; our own bugs keep theirs.
    """

    def __init__(self, name: str, parent: logging.Logger) -> None:
        super().__init__(name)
        self.parent = parent
        self.mistakes = RateLimitedLog(self)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, _CLIENT_MISTAKES):
            peer = args[0] if args else "?"
            self.mistakes.warning("bad request from %s: %s", peer, one_line(exc_info))
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


class OldestFirst:
    """Pending items by age, in total and per source address, to pick whom to evict."""

    def __init__(self) -> None:
        self.all: dict[Any, tuple[str, float]] = {}
        self.by_ip: dict[str, dict[Any, float]] = {}

    def add(self, item: Any, ip: str) -> None:
        now = time.monotonic()
        self.all[item] = (ip, now)
        self.by_ip.setdefault(ip, {})[item] = now

    def remove(self, item: Any) -> None:
        entry = self.all.pop(item, None)
        if entry is not None:
            ip = entry[0]
            same = self.by_ip[ip]
            del same[item]
            if not same:
                del self.by_ip[ip]

    def count(self, ip: str) -> int:
        return len(self.by_ip.get(ip, ()))

    def over(
        self, ip: str, limits: ListenerLimits, *, per_ip: bool, grace: float, evictable: Any = None
    ) -> Any:
        """The oldest item to evict so that ``ip``'s new arrival fits, or ``None``.

        Only items pending longer than ``grace`` (and passing ``evictable``) go:
        a burst of fresh connections is let through, an idle one makes room.
        """
        scope: dict[Any, Any]
        if per_ip and self.count(ip) > limits.max_pending_per_ip:
            scope = self.by_ip[ip]  # the victim must come from the same source
        elif len(self.all) > limits.max_pending:
            scope = self.all
        else:
            return None
        now = time.monotonic()
        for item, value in scope.items():
            since = value[1] if isinstance(value, tuple) else value
            if now - since < grace:
                break  # every later one is younger still
            if evictable is None or evictable(item):
                return item
        return None


LINGER = 2.0
"""Seconds a connection is kept to drain a body that was answered before it was read."""

EVICT_GRACE = 1.0
"""Seconds a pending connection is safe from eviction (it may just not be read yet)."""


class GuardedServer(web.Server):
    """aiohttp's low-level server with pending-connection caps (see module doc).

    Beyond a cap the oldest pending connection is closed, so that idle peers
    make room for new arrivals rather than keep them out.
    """

    def __init__(
        self, handler: Any, *, limits: ListenerLimits, trust: ProxyTrust, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.trust = trust
        self._pending = OldestFirst()
        self._evictions = RateLimitedLog(log)
        inner_factory = self.request_factory

        def request_factory(message: Any, payload: Any, protocol: Any, *args: Any) -> Any:
            self._pending.remove(protocol)
            return inner_factory(message, payload, protocol, *args)

        self.request_factory = request_factory

    @property
    def pending_count(self) -> int:
        """Connections accepted and still without a request."""
        return len(self._pending.all)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        self._pending.add(handler, ip)
        victim = self._pending.over(
            ip, self.limits, per_ip=not self.trust.trusts(ip), grace=EVICT_GRACE
        )
        if victim is not None:
            victim_ip = self._pending.all[victim][0]
            self._pending.remove(victim)
            self._evictions.warning(
                "closing idle connection from %s: %d connections without a request (%d from %s)",
                victim_ip,
                len(self._pending.all) + 1,
                self._pending.count(ip),
                ip,
            )
            # After the victim's own start-up step, which aiohttp has already scheduled.
            self._loop.call_soon(victim.force_close)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._pending.remove(handler)
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    """An :class:`web.AppRunner` whose server is a :class:`GuardedServer`."""

    def __init__(
        self, app: web.Application, *, limits: ListenerLimits, trust: ProxyTrust, **kwargs: Any
    ) -> None:
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout)
        # After an early answer (401, 408, ...), drain what the peer still sends for at
        # most this long, then close (aiohttp: 10 s).
        kwargs.setdefault("lingering_time", LINGER)
        kwargs.setdefault(
            "logger", PeerErrorLogger("aiohttp.server.peers", logging.getLogger("aiohttp.server"))
        )
        super().__init__(app, **kwargs)
        self.limits = limits
        self.trust = trust

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        return GuardedServer(
            inner.request_handler,
            limits=self.limits,
            trust=self.trust,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=inner._loop,
            **inner._kwargs,
        )
