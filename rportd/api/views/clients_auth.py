"""``/clients-auth``: the credentials RPort clients log in with (api.md §5.7, admin only)."""

from __future__ import annotations

import json

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.errors import ApiError
from rportd.api.guards import admin_only, writes_replicated
from rportd.api.query import ListSpec, filter_items, paginate, parse_list_options
from rportd.api.responses import created_empty, envelope, expect_type, no_content, read_json
from rportd.clients.credentials import CredentialExists, CredentialsReadOnly

MIN_LENGTH = 3
ERR_SINGLE = "ERR_CODE_CLIENT_AUTH_SINGLE"
ERR_RO = "ERR_CODE_CLIENT_AUTH_RO"
ERR_HAS_CLIENT = "ERR_CODE_CLIENT_AUTH_HAS_CLIENT"
ERR_NOT_FOUND = "ERR_CODE_CLIENT_AUTH_NOT_FOUND"
ERR_INVALID = "ERR_CODE_INVALID_REQUEST"
ERR_EXISTS = "ERR_CODE_ALREADY_EXIST"

LIST_SPEC = ListSpec(filter_fields=frozenset({"id"}), page_default=50, page_max=500)

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _q(text: str) -> str:
    """Go's ``%q``."""
    return json.dumps(text, ensure_ascii=False)


def _require_writable(request: web.Request) -> None:
    server = server_of(request)
    if not server.credentials.writable:
        raise ApiError(
            405, "Client authentication is enabled only for a single user.", code=ERR_SINGLE
        )
    if not server.config.server.auth_write:
        raise ApiError(
            405, "Client authentication has been attached in read-only mode.", code=ERR_RO
        )


def _credential(auth_id: str, password: str) -> dict[str, str]:
    return {"id": auth_id, "password": password}


@admin_only
async def list_credentials(request: web.Request) -> web.Response:
    options = parse_list_options(request.query, LIST_SPEC)
    items = [_credential(i, p) for i, p in await server_of(request).credentials.list_all()]
    matched = filter_items(items, options.filters, lambda item, name: item[name])
    return envelope(paginate(matched, options.pagination), count=len(matched))


@admin_only
async def get_credential(request: web.Request) -> web.Response:
    auth_id = request.match_info["client_auth_id"]
    password = await server_of(request).credentials.lookup(auth_id)
    if password is None:
        raise ApiError(404, f"Client Auth with ID {_q(auth_id)} not found")
    return envelope(_credential(auth_id, password))


@writes_replicated
@admin_only
async def add_credential(request: web.Request) -> web.Response:
    _require_writable(request)
    body = await read_json(request, ("id", "password"))
    auth_id = expect_type(body, "id", str, "")
    password = expect_type(body, "password", str, "")
    if len(auth_id.encode()) < MIN_LENGTH:
        raise ApiError(400, "Invalid or missing ID.", f"Min size is {MIN_LENGTH}.", ERR_INVALID)
    if len(password.encode()) < MIN_LENGTH:
        raise ApiError(
            400, "Invalid or missing password.", f"Min size is {MIN_LENGTH}.", ERR_INVALID
        )
    try:
        await server_of(request).credentials.add(auth_id, password)
    except CredentialExists:
        raise ApiError(
            409, f"Client Auth with ID {_q(auth_id)} already exist.", code=ERR_EXISTS
        ) from None
    except CredentialsReadOnly:
        raise ApiError(
            405, "Client authentication is enabled only for a single user.", code=ERR_SINGLE
        ) from None
    return created_empty()


@writes_replicated
@admin_only
async def delete_credential(request: web.Request) -> web.Response:
    _require_writable(request)
    server = server_of(request)
    auth_id = request.match_info["client_auth_id"]
    raw_force = request.query.get("force", "")
    if raw_force and raw_force not in _TRUE + _FALSE:
        raise ApiError(400, f"Invalid force param {raw_force}.", code=ERR_INVALID)
    force = raw_force in _TRUE
    if await server.credentials.lookup(auth_id) is None:
        raise ApiError(404, f"Client Auth with ID={_q(auth_id)} not found.", code=ERR_NOT_FOUND)
    bound = server.clients.registry.by_auth_id(auth_id)
    if bound and not force:
        raise ApiError(
            409,
            "Client Auth expected to have no active or disconnected bound client(s), "
            f"got {len(bound)}.",
            code=ERR_HAS_CLIENT,
        )
    for client in bound:
        conn = client.connection
        if conn is not None:
            server.clients.on_disconnect(conn, client)
            conn.close()
        await server.clients.delete_client(client.id)
    await server.credentials.delete(auth_id)
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/clients-auth", list_credentials)
    r.add_post("/api/v1/clients-auth", add_credential)
    r.add_get("/api/v1/clients-auth/{client_auth_id}", get_credential)
    r.add_delete("/api/v1/clients-auth/{client_auth_id}", delete_credential)
