"""The HA status page (``/ha``) and what it reads: the cluster overview and HA events."""

from __future__ import annotations

import asyncio
import importlib.resources
from typing import Any

import aiohttp
from aiohttp import web

from rportd.api.guards import public
from rportd.api.responses import envelope
from rportd.api.views.ha import controller, person_or_peer
from rportd.ha import events
from rportd.ha.controller import HAController

PAGE = importlib.resources.files("rportd.ha").joinpath("status_page.html")
PEER_TIMEOUT = 1.5


async def page(_: web.Request) -> web.Response:
    """The page itself holds no data: it logs in and reads ``/api/v1/ha/overview``."""
    html = await asyncio.to_thread(PAGE.read_text, "utf-8")
    return web.Response(
        text=html,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; frame-ancestors 'none'",
        },
    )


def own_events(ha: HAController) -> list[dict[str, Any]]:
    return [e.to_json() for e in events.recent(ha)]


@public
async def events_view(request: web.Request) -> web.Response:
    """This node's recent HA events (users, and peers for their overview)."""
    ha = controller(request)
    await person_or_peer(request, admin=False)
    return envelope(own_events(ha))


async def _peer(ha: HAController, url: str) -> dict[str, Any]:
    """A peer's status and events, or why it cannot be read."""
    try:
        (status_code, status), (_, peer_events) = await asyncio.gather(
            ha.peers.call("GET", url, "/status", timeout=PEER_TIMEOUT),
            ha.peers.call("GET", url, "/events", timeout=PEER_TIMEOUT),
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return {"url": url, "reachable": False, "error": str(exc) or type(exc).__name__}
    data = status.get("data") if isinstance(status, dict) else None
    if status_code != 200 or not isinstance(data, dict):
        return {"url": url, "reachable": False, "error": f"HTTP {status_code}"}
    found = peer_events.get("data") if isinstance(peer_events, dict) else None
    return {
        **data,
        "url": url,
        "reachable": True,
        "events": found if isinstance(found, list) else [],
    }


@public
async def overview(request: web.Request) -> web.Response:
    """Every node's status (this one and its peers, asked now) and their events."""
    ha = controller(request)
    await person_or_peer(request, admin=False)
    own = {**ha.status(), "url": "", "this_node": True, "reachable": True}
    own["events"] = own_events(ha)
    peers = await asyncio.gather(*(_peer(ha, p["url"]) for p in own["peers"]))
    nodes = [own, *peers]
    timeline = sorted(
        (
            {**event, "node": node["url"] or "this node"}
            for node in nodes
            for event in node.pop("events", [])
            if isinstance(event, dict)
        ),
        key=lambda e: float(e.get("at", 0)),
        reverse=True,
    )
    for node in nodes:
        node.pop("peers", None)
    return envelope({"nodes": nodes, "events": timeline})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/ha", page)
    r.add_get("/api/v1/ha/overview", overview)
    r.add_get("/api/v1/ha/events", events_view)
