"""``/library/scripts`` and ``/library/commands``: saved scripts and commands (api.md §6)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, ErrorItem, not_found
from rportd.api.guards import require_permission, writes_replicated
from rportd.api.query import parse_list_options
from rportd.api.responses import envelope, expect_type, no_content, read_json
from rportd.library.store import LibraryError, LibraryStore

_TYPES: dict[str, type] = {
    "name": str,
    "interpreter": str,
    "is_sudo": bool,
    "cwd": str,
    "script": str,
    "cmd": str,
    "tags": list,
    "timeout_sec": int,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: LibraryError) -> ApiError:
    return ApiError(exc.status, exc.titles[0], items=[ErrorItem(t) for t in exc.titles])


async def _input(request: web.Request, store: LibraryStore) -> dict[str, Any]:
    body = await read_json(request, store.kind.input_keys)
    for key in store.kind.input_keys:
        expect_type(body, key, _TYPES[key], None)
    tags = body.get("tags")
    if tags is not None and not all(isinstance(t, str) for t in tags):
        raise ApiError(400, "Invalid JSON data.", "json: field 'tags' must be a list of strings")
    return body


def _views(kind: str, permission: str) -> dict[str, Handler]:
    def store_of(request: web.Request) -> LibraryStore:
        require_permission(request, permission)
        library = server_of(request).library
        return library.scripts if kind == "scripts" else library.commands

    async def list_items(request: web.Request) -> web.Response:
        store = store_of(request)
        options = parse_list_options(request.query, store.kind.list_spec)
        items, count = await store.page(options)
        return envelope(items, count=count)

    async def get_item(request: web.Request) -> web.Response:
        store = store_of(request)
        item_id = request.match_info["id"]
        options = parse_list_options(request.query, store.kind.detail_spec)
        item = await store.get(item_id, options.fields_for(store.kind.table))
        if item is None:
            raise not_found(f"Cannot find a {store.kind.noun} by the provided id: {item_id}")
        return envelope(item)

    async def create_item(request: web.Request) -> web.Response:
        store = store_of(request)
        body = await _input(request, store)
        try:
            item = await store.create(body, identity_of(request).username)
        except LibraryError as exc:
            raise _error(exc) from None
        return envelope(item, status=201)

    async def update_item(request: web.Request) -> web.Response:
        store = store_of(request)
        body = await _input(request, store)
        try:
            item = await store.update(request.match_info["id"], body, identity_of(request).username)
        except LibraryError as exc:
            raise _error(exc) from None
        return envelope(item)

    async def delete_item(request: web.Request) -> web.Response:
        store = store_of(request)
        try:
            await store.delete(request.match_info["id"])
        except LibraryError as exc:
            raise _error(exc) from None
        return no_content()

    return {
        "list": list_items,
        "get": get_item,
        "create": writes_replicated(create_item),
        "update": writes_replicated(update_item),
        "delete": writes_replicated(delete_item),
    }


def setup(app: web.Application) -> None:
    r = app.router
    for kind, permission in (("scripts", "scripts"), ("commands", "commands")):
        views = _views(kind, permission)
        base = f"/api/v1/library/{kind}"
        r.add_get(base, views["list"])
        r.add_post(base, views["create"])
        r.add_get(base + "/{id}", views["get"])
        r.add_put(base + "/{id}", views["update"])
        r.add_delete(base + "/{id}", views["delete"])
