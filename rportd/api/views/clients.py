"""``/clients``: list, read and delete clients (api.md §5.4)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, bad_request, forbidden, not_found
from rportd.api.query import (
    ListSpec,
    SortOption,
    filter_items,
    paginate,
    parse_list_options,
    sort_items,
)
from rportd.api.responses import envelope, no_content
from rportd.clients.model import CLIENT_FIELDS, Client

FILTER_FIELDS = frozenset(
    {
        "id",
        "name",
        "os",
        "os_arch",
        "os_family",
        "os_kernel",
        "os_full_name",
        "os_version",
        "os_virtualization_system",
        "os_virtualization_role",
        "cpu_family",
        "cpu_model",
        "cpu_model_name",
        "cpu_vendor",
        "num_cpus",
        "timezone",
        "hostname",
        "ipv4",
        "ipv6",
        "tags",
        "labels",
        "version",
        "address",
        "client_auth_id",
        "allowed_user_groups",
        "groups",
        "connection_state",
    }
)

LIST_SPEC = ListSpec(
    sort_fields=frozenset({"id", "name", "os", "hostname", "version"}),
    default_sort=(SortOption("id", False),),
    single_sort=True,
    filter_fields=FILTER_FIELDS,
    fields={"clients": frozenset(CLIENT_FIELDS)},
    default_fields={"clients": ("id", "name", "hostname")},
    page_default=50,
    page_max=500,
)

DETAIL_SPEC = ListSpec(fields={"clients": frozenset(CLIENT_FIELDS)})


def access_denied(*client_ids: str) -> ApiError:
    return forbidden(f"Access denied to client(s) with ID(s): {', '.join(client_ids)}")


def accessible_client(request: web.Request, client_id: str) -> Client:
    """The client ``client_id`` if it exists and the caller may access it (404/403 else)."""
    server = server_of(request)
    client = server.clients.registry.get(client_id)
    if client is None:
        raise not_found(f'Client with id="{client_id}" not found.')
    if not server.client_access.can_access(identity_of(request), client):
        raise access_denied(client_id)
    return client


async def list_clients(request: web.Request) -> web.Response:
    server = server_of(request)
    options = parse_list_options(request.query, LIST_SPEC)
    identity = identity_of(request)
    access = server.client_access
    visible = [c for c in server.clients.registry.all() if access.can_access(identity, c)]
    groups = {c.id: access.groups_of(c) for c in visible}

    def value(client: Client, name: str) -> object:
        return client.field_value(name, groups[client.id])

    matched = filter_items(visible, options.filters, value)
    ordered = sort_items(matched, options.sorts, value)
    page = paginate(ordered, options.pagination)
    fields = options.fields_for("clients")
    return envelope(
        [c.to_api(groups[c.id], fields) for c in page],
        count=len(matched),
    )


async def get_client(request: web.Request) -> web.Response:
    server = server_of(request)
    client = accessible_client(request, request.match_info["client_id"])
    options = parse_list_options(request.query, DETAIL_SPEC)
    groups = server.client_access.groups_of(client)
    return envelope(client.to_api(groups, options.fields_for("clients")))


async def delete_client(request: web.Request) -> web.Response:
    server = server_of(request)
    client = accessible_client(request, request.match_info["client_id"])
    if client.connected:
        raise bad_request("Client is active, should be disconnected")
    await server.clients.delete_client(client.id)
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/clients", list_clients)
    r.add_get("/api/v1/clients/{client_id}", get_client)
    r.add_delete("/api/v1/clients/{client_id}", delete_client)
