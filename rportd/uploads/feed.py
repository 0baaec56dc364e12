"""The ``/ws/uploads`` feed: every per-client upload outcome goes to every listening socket."""

from __future__ import annotations

import asyncio
import logging

from rportd.gotypes import go_dumps
from rportd.uploads.model import UploadOutcome

log = logging.getLogger(__name__)

BACKLOG = 1000


class UploadFeed:
    """Fans outcomes out to subscribers; a subscriber that falls far behind loses messages."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[str]] = set()

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, outcome: UploadOutcome) -> None:
        # Go's websocket WriteJSON ends every message with a newline.
        text = go_dumps(outcome.to_json()) + "\n"
        for queue in self._subscribers:
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("an /ws/uploads listener is %d messages behind; dropping one", BACKLOG)
