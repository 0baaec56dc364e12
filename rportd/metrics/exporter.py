"""One server's ``/metrics``: its instruments, scrape-time readings and the process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from rportd.metrics.collector import ServerCollector
from rportd.metrics.instruments import Metrics
from rportd.metrics.loop_lag import LoopLagMonitor

if TYPE_CHECKING:
    from rportd.app import RportServer

# No ``*_created`` series: they double the output and dashboards do not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class MetricsExporter:
    """Renders the Prometheus text format for ``server`` (``process_*`` included)."""

    def __init__(self, server: RportServer, metrics: Metrics) -> None:
        self.metrics = metrics
        self.collector = ServerCollector(server)
        metrics.registry.register(self.collector)
        ProcessCollector(registry=metrics.registry)
        self.loop_lag = LoopLagMonitor(metrics.registry)

    def start(self) -> None:
        self.loop_lag.start()

    async def stop(self) -> None:
        await self.loop_lag.stop()

    async def render(self) -> bytes:
        await self.collector.refresh()
        return generate_latest(self.metrics.registry)

    async def response(self) -> web.Response:
        body = await self.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def app(self) -> web.Application:
        """The ``[metrics] address`` listener: ``GET /metrics``, no authentication."""

        async def metrics(_: web.Request) -> web.Response:
            return await self.response()

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app
