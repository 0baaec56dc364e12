"""Event-loop lag: how late a periodic wake-up runs (a blocked loop shows here)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram

from rportd.tasks import BackgroundTask

INTERVAL = 0.5
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLagMonitor:
    """Measures the delay of a timer every :data:`INTERVAL` seconds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "rportd_event_loop_lag_seconds",
            f"How late a {INTERVAL}s timer fires on the event loop.",
            buckets=BUCKETS,
            registry=registry,
        )
        self.last = 0.0
        self._task = BackgroundTask(self._run, "event-loop-lag")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + INTERVAL
            await asyncio.sleep(INTERVAL)
            self.last = max(0.0, loop.time() - due)
            self.lag.observe(self.last)
