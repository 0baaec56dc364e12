"""API request counts and latency by route template (``rportd_api_request...``)."""

from __future__ import annotations

import time

from aiohttp import web

from rportd.api.context import SERVER_KEY
from rportd.api.guards import Handler

UNMATCHED = "unmatched"


def route_template(request: web.Request) -> str:
    """The route's template (``/api/v1/clients/{client_id}``), never the concrete path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by method, route template and status; time the non-WebSocket ones."""
    metrics = request.app[SERVER_KEY].metrics
    started = time.perf_counter()
    status = 500
    streamed = False
    try:
        response = await handler(request)
        status = response.status
        streamed = isinstance(response, web.WebSocketResponse)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        seconds = None if streamed else time.perf_counter() - started
        metrics.api_request(request.method, route_template(request), status, seconds)
