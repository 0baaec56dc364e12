"""Stored tunnels: a client's saved tunnel templates (api.md §6)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.errors import ApiError, not_found
from rportd.api.guards import require_permission
from rportd.api.query import ListSpec, parse_list_options
from rportd.api.responses import envelope, no_content, read_json
from rportd.api.views.clients import accessible_client
from rportd.clients.model import Client
from rportd.tunnels.stored import INPUT_KEYS, StoredTunnelInputError, parse_input

LIST_SPEC = ListSpec(
    sort_fields=frozenset({"created_at", "name", "scheme", "remote_ip", "remote_port"}),
    filter_fields=frozenset({"name", "scheme", "remote_ip", "remote_port"}),
    page_default=10,
    page_max=100,
)


def _client(request: web.Request) -> Client:
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "tunnels")
    return client


async def _values(request: web.Request) -> dict[str, object]:
    body = await read_json(request, INPUT_KEYS)
    try:
        return parse_input(body)
    except StoredTunnelInputError as exc:
        raise ApiError(400, "Invalid JSON data.", str(exc)) from None


async def list_stored(request: web.Request) -> web.Response:
    client = _client(request)
    options = parse_list_options(request.query, LIST_SPEC)
    items, count = await server_of(request).stored_tunnels.list(client.id, options)
    return envelope(items, count=count)


async def create_stored(request: web.Request) -> web.Response:
    client = _client(request)
    values = await _values(request)
    return envelope(await server_of(request).stored_tunnels.create(client.id, values))


async def update_stored(request: web.Request) -> web.Response:
    client = _client(request)
    values = await _values(request)
    tunnel_id = request.match_info["tunnel_id"]
    stored = await server_of(request).stored_tunnels.update(client.id, tunnel_id, values)
    if stored is None:
        raise not_found(f'stored tunnel with id "{tunnel_id}" not found')
    return envelope(stored)


async def delete_stored(request: web.Request) -> web.Response:
    client = _client(request)
    await server_of(request).stored_tunnels.delete(client.id, request.match_info["tunnel_id"])
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    base = "/api/v1/clients/{client_id}/stored-tunnels"
    r.add_get(base, list_stored)
    r.add_post(base, create_stored)
    r.add_put(base + "/{tunnel_id}", update_stored)
    r.add_delete(base + "/{tunnel_id}", delete_stored)
