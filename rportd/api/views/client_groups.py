"""``/client-groups`` and ``/client-tags`` (api.md §6)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, bad_request, conflict, not_found
from rportd.api.guards import admin_only, writes_replicated
from rportd.api.query import (
    ListSpec,
    SortOption,
    filter_items,
    paginate,
    parse_list_options,
    sort_items,
)
from rportd.api.responses import created_empty, envelope, expect_type, no_content, read_json
from rportd.clients.groups import ClientGroup, GroupExists, InvalidGroup, normalize_params
from rportd.clients.model import Client

RESOURCE = "client_groups"
GROUP_FIELDS = (
    "id",
    "description",
    "params",
    "allowed_user_groups",
    "client_ids",
    "num_clients",
    "num_clients_connected",
)
LIST_SPEC = ListSpec(
    sort_fields=frozenset({"id", "description"}),
    default_sort=(SortOption("id"),),
    filter_fields=frozenset({"id", "description"}),
    fields={RESOURCE: frozenset(GROUP_FIELDS)},
    default_fields={RESOURCE: ("id", "description")},
    page_default=50,
    page_max=500,
)
DETAIL_SPEC = ListSpec(fields={RESOURCE: frozenset(GROUP_FIELDS)})
TAGS_SPEC = ListSpec(
    fields={"client_tags": frozenset({"tag", "client_ids"})}, page_default=50, page_max=500
)
BODY_KEYS = ("id", "description", "params", "allowed_user_groups", "client_ids")


def _visible_clients(request: web.Request) -> list[Client]:
    server = server_of(request)
    identity = identity_of(request)
    access = server.client_access
    return [c for c in server.clients.registry.all() if access.can_access(identity, c)]


def _payload(group: ClientGroup, clients: list[Client], fields: list[str] | None) -> dict[str, Any]:
    members = sorted(c.id for c in clients if group.matches(c))
    values: dict[str, Any] = {
        "id": group.id,
        "description": group.description,
        "params": group.params,
        "allowed_user_groups": group.allowed_user_groups,
        "client_ids": members or None,
        "num_clients": len(members),
        "num_clients_connected": sum(1 for c in clients if c.connected and c.id in members),
    }
    wanted = set(fields) if fields else set(GROUP_FIELDS)
    return {k: v for k, v in values.items() if k in wanted}


def _group_from_body(body: dict[str, Any]) -> ClientGroup:
    allowed = expect_type(body, "allowed_user_groups", list, [])
    if not all(isinstance(g, str) for g in allowed):
        raise ApiError(
            400, "Invalid JSON data.", "json: field 'allowed_user_groups' must hold strings"
        )
    try:
        params = normalize_params(body.get("params"))
    except InvalidGroup as exc:
        raise ApiError(400, "Invalid JSON data.", str(exc)) from None
    group = ClientGroup(
        id=expect_type(body, "id", str, ""),
        description=expect_type(body, "description", str, ""),
        params=params,
        allowed_user_groups=list(allowed),
    )
    try:
        group.validate()
    except InvalidGroup as exc:
        raise bad_request("Invalid client group.", str(exc)) from None
    return group


async def list_groups(request: web.Request) -> web.Response:
    options = parse_list_options(request.query, LIST_SPEC)
    clients = _visible_clients(request)
    groups = server_of(request).client_groups.all()

    def value(group: ClientGroup, name: str) -> object:
        return getattr(group, name)

    matched = sort_items(filter_items(groups, options.filters, value), options.sorts, value)
    if not identity_of(request).is_admin:
        matched = [g for g in matched if any(g.matches(c) for c in clients)]
    fields = options.fields_for(RESOURCE)
    page = paginate(matched, options.pagination)
    return envelope([_payload(g, clients, fields) for g in page], count=len(matched))


async def get_group(request: web.Request) -> web.Response:
    options = parse_list_options(request.query, DETAIL_SPEC)
    group_id = request.match_info["group_id"]
    group = server_of(request).client_groups.get(group_id)
    if group is None:
        raise not_found(f"Client Group[id={json.dumps(group_id)}] not found.")
    clients = _visible_clients(request)
    return envelope(_payload(group, clients, options.fields_for(RESOURCE)))


@writes_replicated
@admin_only
async def create_group(request: web.Request) -> web.Response:
    group = _group_from_body(await read_json(request, BODY_KEYS))
    try:
        await server_of(request).client_groups.create(group)
    except GroupExists:
        raise conflict(
            "Failed to persist a new client group.",
            f"a client group with id {json.dumps(group.id)} already exists",
        ) from None
    return created_empty()


@writes_replicated
@admin_only
async def update_group(request: web.Request) -> web.Response:
    group_id = request.match_info["group_id"]
    body = await read_json(request, BODY_KEYS)
    if expect_type(body, "id", str, "") != group_id:
        raise bad_request('"group_id" route param doesn\'t not match group ID from request body.')
    group = _group_from_body(body)
    await server_of(request).client_groups.update(group)
    return no_content()


@writes_replicated
@admin_only
async def delete_group(request: web.Request) -> web.Response:
    await server_of(request).client_groups.delete(request.match_info["group_id"])
    return no_content()


async def list_tags(request: web.Request) -> web.Response:
    options = parse_list_options(request.query, TAGS_SPEC)
    by_tag: dict[str, list[str]] = {}
    for client in _visible_clients(request):
        for tag in client.tags or ():
            by_tag.setdefault(tag, []).append(client.id)
    fields = options.fields_for("client_tags")
    wanted = set(fields) if fields else {"tag", "client_ids"}
    items = []
    for tag in sorted(by_tag):
        item: dict[str, Any] = {"tag": tag, "client_ids": sorted(by_tag[tag])}
        items.append({k: v for k, v in item.items() if k in wanted})
    return envelope(paginate(items, options.pagination), count=len(items))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/client-groups", list_groups)
    r.add_post("/api/v1/client-groups", create_group)
    r.add_get("/api/v1/client-groups/{group_id}", get_group)
    r.add_put("/api/v1/client-groups/{group_id}", update_group)
    r.add_delete("/api/v1/client-groups/{group_id}", delete_group)
    r.add_get("/api/v1/client-tags", list_tags)
