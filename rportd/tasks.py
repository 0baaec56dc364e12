"""Long-running background tasks with one owner that starts and stops them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackgroundTask:
    """One named coroutine run at most once at a time; :meth:`stop` cancels and awaits it."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the coroutine unless it is already started."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the coroutine and wait until it has ended."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        if isinstance(outcome, Exception):
            log.error("background task %s had failed: %r", self.name, outcome)


async def run_to_end(work: Awaitable[T]) -> T:
    """Await ``work``; if the caller is cancelled meanwhile, finish ``work`` first, then end.

    For the writes of a write-behind loop: stopping the loop must not drop the batch it
    has already taken out of its queue.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error("write finished after a cancel had failed: %r", task.exception())
        raise
