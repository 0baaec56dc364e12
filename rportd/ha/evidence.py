"""What the clients show: the fleet, who answers pings here, who knocks here.

* :class:`Fleet` is the set of client ids the serving node had while the link
  was up; the other node learns it from the serving node's heartbeats.
* :class:`Pings` sends WebSocket pings to this node's clients while evidence is
  needed and counts those that answered a recent one.
* :class:`Lobby` holds the ``new_connection`` of clients that knock while this
  node does not serve, and counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from rportd.ha.rules import FRESH_WINDOW, KNOCK_WINDOW, PING_INTERVAL

log = logging.getLogger(__name__)

PING_TIMEOUT = 2.0


class Pingable(Protocol):
    """A client connection that can be pinged below SSH (a WebSocket ping)."""

    def send_ping(self) -> None: ...

    @property
    def ping_answered_at(self) -> float:
        """Monotonic send time of the newest ping answered (0: none)."""
        ...


@dataclass
class Fleet:
    """The client ids that count as the fleet, and when they were last known."""

    ids: frozenset[str] = frozenset()
    generation: int = 0

    def update(self, ids: Iterable[str]) -> None:
        new = frozenset(ids)
        if new != self.ids:
            self.ids = new
            self.generation += 1

    def __len__(self) -> int:
        return len(self.ids)

    def counts(self, client_id: str) -> bool:
        """Whether a client belongs to the fleet (with no fleet, every client does)."""
        return not self.ids or client_id in self.ids


class Pings:
    """Pings this node's clients while evidence is needed; counts fresh answers."""

    def __init__(self, connections: Callable[[], Iterable[tuple[str, Pingable]]]) -> None:
        self._connections = connections
        self._task: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self.started_at = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="ha-client-pings")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            for _, conn in self._connections():
                conn.send_ping()
            await asyncio.sleep(PING_INTERVAL)

    def fresh(self, fleet: Fleet, now: float) -> int | None:
        """Fleet clients here that answered a ping sent in the last FRESH_WINDOW.

        ``None`` while not pinging, or not long enough for an answer to come back.
        """
        if not self.running or now - self.started_at < PING_TIMEOUT:
            return None
        since = now - FRESH_WINDOW
        return sum(
            1
            for client_id, conn in self._connections()
            if fleet.counts(client_id) and conn.ping_answered_at >= since
        )


@dataclass
class _Knock:
    first: float
    last: float


@dataclass
class Lobby:
    """Clients knocking while this node does not serve; their requests wait here."""

    hold: float = 20.0
    knocks: dict[str, _Knock] = field(default_factory=dict)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def knock(self, client_id: str, now: float) -> None:
        knock = self.knocks.get(client_id)
        if knock is None or now - knock.last > KNOCK_WINDOW:
            self.knocks[client_id] = _Knock(now, now)
        else:
            knock.last = now

    def forget(self, client_id: str) -> None:
        self.knocks.pop(client_id, None)

    def _expire(self, now: float) -> None:
        for client_id in [c for c, k in self.knocks.items() if now - k.last > KNOCK_WINDOW]:
            del self.knocks[client_id]

    def waiting(self, fleet: Fleet, now: float) -> int:
        """Fleet clients knocking here for at least FRESH_WINDOW (still knocking)."""
        self._expire(now)
        return sum(
            1
            for client_id, k in self.knocks.items()
            if fleet.counts(client_id) and now - k.first >= FRESH_WINDOW
        )

    def knocked(self, now: float) -> int:
        """Authenticated clients that knocked here recently, of the fleet or not.

        Only a take-back with the link up asks this, which is coordinated with the
        peer anyway: it shows that clients reach this node again. A client
        switching back has already left the peer, so it is no longer in the fleet
        the peer reports.
        """
        self._expire(now)
        return len(self.knocks)

    async def wait(self, client_id: str, admitted: Callable[[], bool]) -> bool:
        """Hold one knock until ``admitted()`` turns true or ``hold`` seconds pass."""
        deadline = time.monotonic() + self.hold
        while True:
            opened = self.opened
            if admitted():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.5)):
                    await opened.wait()
            knock = self.knocks.get(client_id)
            if knock is not None:
                knock.last = time.monotonic()

    def open(self) -> None:
        """Wake the held requests (the node may admit now)."""
        opened, self.opened = self.opened, asyncio.Event()
        opened.set()
