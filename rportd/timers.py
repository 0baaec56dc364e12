"""One timer queue for many deadlines (tunnel idle timeouts and auto-close, job results).

A heap of deadlines served by a single task, instead of a sleeping task per
tunnel or job. Callbacks run on the event loop and must not block.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from rportd.tasks import BackgroundTask

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Timer:
    """A scheduled callback; :meth:`cancel` it when it is no longer wanted."""

    __slots__ = ("_owner", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None], owner: Scheduler) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._owner: Scheduler | None = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self._owner is not None:
                self._owner._cancelled_one()


class Scheduler:
    """Runs callbacks at their deadline on a monotonic clock.

    ``clock`` can be replaced (tests move time forward, then call :meth:`wake`).
    """

    def __init__(self, clock: Clock = time.monotonic, name: str = "timers") -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._task = BackgroundTask(self._run, name)
        self._cancelled = 0

    def now(self) -> float:
        return self.clock()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once the clock reaches ``when``."""
        timer = Timer(when, callback, self)
        first = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if first is None or when < first:
            self.wake()
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.now() + delay, callback)

    def wake(self) -> None:
        """Re-check deadlines now (after a new earliest deadline or a clock change)."""
        self._wakeup.set()

    def __len__(self) -> int:
        """Timers still pending."""
        return len(self._heap) - self._cancelled

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        self._heap.clear()
        self._cancelled = 0

    def run_due(self) -> int:
        """Run every timer whose deadline has passed; return how many ran."""
        ran = 0
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            timer._owner = None
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True
            ran += 1
            try:
                timer.callback()
            except Exception:
                log.exception("timer callback failed")
        return ran

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            self.run_due()
            while self._heap and self._heap[0][2].cancelled:
                heapq.heappop(self._heap)[2]._owner = None
                self._cancelled -= 1
            alarm = None
            if self._heap:
                delay = self._heap[0][0] - self.clock()
                if delay <= 0:
                    continue
                alarm = loop.call_later(delay, self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                if alarm is not None:
                    alarm.cancel()
