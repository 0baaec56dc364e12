"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it serves clients now).

Unauthenticated and cheap (no I/O), for systemd, Kubernetes probes and load balancers.
"""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.guards import public
from rportd.api.responses import json_response


@public
async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@public
async def readyz(request: web.Request) -> web.Response:
    reasons = server_of(request).not_ready_reasons()
    if reasons:
        return json_response({"status": "not ready", "reasons": reasons}, 503)
    return json_response({"status": "ready"})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
