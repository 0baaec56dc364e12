"""``GET /metrics``: Prometheus metrics on the API listener (``[metrics]``)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import AUTH_KEY, SERVER_KEY, server_of
from rportd.api.errors import not_found
from rportd.api.guards import public


@public
async def metrics(request: web.Request) -> web.Response:
    server = server_of(request)
    if server.exporter is None:
        raise not_found("metrics are turned off ([metrics] enabled = false)")
    if server.config.metrics.require_auth:
        await request.app[AUTH_KEY].authenticate(request)
    return await server.exporter.response()


def setup(app: web.Application) -> None:
    if app[SERVER_KEY].config.metrics.enabled:
        app.router.add_get("/metrics", metrics)
