"""``POST /clients/{client_id}/acl``: which user groups may use a client (api.md §5.4)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.errors import ApiError, not_found
from rportd.api.guards import require_admin, writes_replicated
from rportd.api.responses import expect_type, no_content, read_json
from rportd.api.views.clients import accessible_client
from rportd.api.views.users import FILE_NO_GROUPS, STATIC_NO_GROUPS, users_of
from rportd.auth.users import SOURCE_FILE, SOURCE_STATIC


async def _check_groups_exist(request: web.Request, names: list[str]) -> None:
    store = users_of(request)
    if store.source == SOURCE_STATIC:
        raise ApiError(400, STATIC_NO_GROUPS)
    if store.source == SOURCE_FILE:
        raise ApiError(400, FILE_NO_GROUPS)
    known = {g.name for g in await store.groups()}
    missing = [n for n in names if n not in known]
    if missing:
        raise not_found(f"user groups not found: {', '.join(missing)}")


@writes_replicated
async def set_acl(request: web.Request) -> web.Response:
    client = accessible_client(request, request.match_info["client_id"])
    require_admin(request)
    body = await read_json(request, ("allowed_user_groups",))
    groups = expect_type(body, "allowed_user_groups", list, None)
    if groups is not None and not all(isinstance(g, str) for g in groups):
        raise ApiError(400, "Invalid JSON data.", "json: allowed_user_groups must hold strings")
    await _check_groups_exist(request, groups or [])
    await server_of(request).client_acls.set(
        client.id, list(groups) if groups is not None else None
    )
    return no_content()


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/clients/{client_id}/acl", set_acl)
