"""Client monitoring data: metrics, processes, mount points and graphs (api.md §4.11, §6)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.errors import not_found
from rportd.api.guards import require_permission
from rportd.api.query import parse_list_options
from rportd.api.responses import envelope, json_response
from rportd.api.views.clients import accessible_client
from rportd.clients.model import Client
from rportd.monitoring.queries import (
    BASIC_GRAPHS,
    GRAPH_SPEC,
    GRAPHS,
    LAN_GRAPHS,
    METRICS_SPEC,
    MOUNTPOINTS_SPEC,
    PROCESSES_SPEC,
    WAN_GRAPHS,
    MeasurementQueries,
    graph_window,
    network_card_speed,
)

DISABLED = "monitoring disabled. re-enable to view monitoring statistics."


def _open(request: web.Request) -> tuple[Client, MeasurementQueries]:
    """Client access, then the permission, then whether monitoring is on (upstream's order)."""
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "monitoring")
    measurements = server_of(request).measurements
    if measurements is None:
        raise not_found(DISABLED)
    return client, MeasurementQueries(measurements.db)


async def get_metrics(request: web.Request) -> web.Response:
    client, queries = _open(request)
    options = parse_list_options(request.query, METRICS_SPEC)
    items, total = await queries.metrics(client.id, options)
    return envelope(items, count=total)


async def get_processes(request: web.Request) -> web.Response:
    client, queries = _open(request)
    options = parse_list_options(request.query, PROCESSES_SPEC)
    items, total = await queries.snapshots(client.id, options, "processes")
    return envelope(items, count=total)


async def get_mountpoints(request: web.Request) -> web.Response:
    client, queries = _open(request)
    options = parse_list_options(request.query, MOUNTPOINTS_SPEC)
    items, total = await queries.snapshots(client.id, options, "mountpoints")
    return envelope(items, count=total)


async def get_graph_metrics(request: web.Request) -> web.Response:
    client, queries = _open(request)
    window = graph_window(parse_list_options(request.query, GRAPH_SPEC))
    rows = await queries.graph_metrics(client.id, window)
    config = client.client_configuration
    names = list(BASIC_GRAPHS)
    if network_card_speed(config, "lan_card") is not None:
        names += LAN_GRAPHS
    if network_card_speed(config, "wan_card") is not None:
        names += WAN_GRAPHS
    scheme = "https" if request.secure else "http"
    here = f"{scheme}://{request.host}{request.path}"
    return json_response({"data": rows, "links": {name: f"{here}/{name}" for name in names}})


async def get_graph(request: web.Request) -> web.Response:
    client, queries = _open(request)
    name = request.match_info["graph_name"]
    graph = GRAPHS.get(name)
    speed = network_card_speed(client.client_configuration, graph.card) if graph else None
    if graph is not None and graph.network and speed is None:
        raise not_found(f"graph data {name} not available for client with id {client.id}")
    window = graph_window(parse_list_options(request.query, GRAPH_SPEC))
    if graph is None:
        raise not_found(f"unknown graph: {name}", f"graphs: {', '.join(GRAPHS)}")
    return json_response({"data": await queries.graph(client.id, window, graph, speed)})


def setup(app: web.Application) -> None:
    base = "/api/v1/clients/{client_id}"
    app.router.add_get(f"{base}/metrics", get_metrics)
    app.router.add_get(f"{base}/processes", get_processes)
    app.router.add_get(f"{base}/mountpoints", get_mountpoints)
    app.router.add_get(f"{base}/graph-metrics", get_graph_metrics)
    app.router.add_get(f"{base}/graph-metrics/{{graph_name}}", get_graph)
