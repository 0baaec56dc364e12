"""Tunnels: create, close and re-ACL a client's tunnels; list all of them (api.md §5.5)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, bad_request, not_found
from rportd.api.guards import permission, require_permission
from rportd.api.responses import envelope, no_content, read_json
from rportd.api.views.clients import accessible_client
from rportd.clients.model import Client
from rportd.tunnels.errors import TunnelError
from rportd.tunnels.model import Tunnel
from rportd.tunnels.request import parse_go_bool, parse_tunnel_request


def _api_error(exc: TunnelError) -> ApiError:
    return ApiError(exc.status, exc.title, exc.detail, exc.code)


def _active_client(request: web.Request) -> Client:
    """Client access, then the ``tunnels`` permission, then the client must be connected."""
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "tunnels")
    return client


def _connected(client: Client) -> Client:
    if client.connection is None:
        raise not_found(f"client with id {client.id} not found")
    return client


def _tunnel(request: web.Request, client: Client) -> Tunnel:
    tunnel = server_of(request).tunnels.find(client, request.match_info["tunnel_id"])
    if tunnel is None:
        raise not_found("tunnel not found")
    return tunnel


async def create_tunnel(request: web.Request) -> web.Response:
    server = server_of(request)
    client = _connected(_active_client(request))
    try:
        wanted = parse_tunnel_request(request.query, proxy_enabled=server.tunnels.proxy_enabled)
        tunnel = await server.tunnels.create(client, wanted, identity_of(request).username)
    except TunnelError as exc:
        raise _api_error(exc) from None
    return envelope(tunnel.to_json())


async def delete_tunnel(request: web.Request) -> web.Response:
    client = _active_client(request)
    raw = request.query.get("force", "")
    try:
        force = parse_go_bool(raw) if raw else False
    except ValueError:
        raise bad_request(f"Invalid force param: {raw}.") from None
    tunnel = _tunnel(request, _connected(client))
    try:
        server_of(request).tunnels.terminate(client, tunnel, force=force)
    except TunnelError as exc:
        raise ApiError(409, exc.title) from None
    return no_content()


async def set_tunnel_acl(request: web.Request) -> web.Response:
    client = _connected(_active_client(request))
    tunnel = _tunnel(request, client)
    body = await read_json(request, ("acl",))
    acl = body.get("acl")
    if acl is not None and not isinstance(acl, str):
        raise ApiError(400, "Invalid JSON data.", "json: field 'acl' must be a string or null")
    try:
        server_of(request).tunnels.set_acl(client, tunnel, acl)
    except TunnelError as exc:
        raise _api_error(exc) from None
    return no_content()


@permission("tunnels")
async def list_tunnels(request: web.Request) -> web.Response:
    """Running tunnels of the connected clients the caller may access."""
    server = server_of(request)
    identity = identity_of(request)
    items: list[dict[str, object]] = []
    for client in sorted(server.clients.registry.connected(), key=lambda c: c.id):
        if not server.client_access.can_access(identity, client):
            continue
        items.extend(t.to_list_item(client.id) for t in client.tunnels if isinstance(t, Tunnel))
    return envelope(items)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/tunnels", list_tunnels)
    r.add_put("/api/v1/clients/{client_id}/tunnels", create_tunnel)
    r.add_delete("/api/v1/clients/{client_id}/tunnels/{tunnel_id}", delete_tunnel)
    r.add_put("/api/v1/clients/{client_id}/tunnels/{tunnel_id}/acl", set_tunnel_acl)
