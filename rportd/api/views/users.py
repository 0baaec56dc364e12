"""``/users``, ``/user-groups`` and users' API sessions (api.md §5.8, admin only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.errors import ApiError, bad_request, not_found
from rportd.api.guards import Handler, admin_only, writes_replicated
from rportd.api.responses import created_empty, envelope, expect_type, no_content, read_json
from rportd.auth.accounts import AccountService, UserChange
from rportd.auth.users import (
    PERMISSIONS,
    SOURCE_FILE,
    SOURCE_STATIC,
    DbUserStore,
    User,
    UserGroup,
    UserStore,
)

STATIC_SOURCE = (
    "server runs on a static user-password pair, please use JSON file or database for user data"
)
FILE_NO_GROUPS = "The json file authentication backend doesn't support this feature."
STATIC_NO_GROUPS = "The single user authentication doesn't support this feature."
NO_DETAILS_TABLE = "User group details table must be configured for this operation."
TOTP_DISABLED = "TotP is disabled"

USER_KEYS = ("username", "password", "password_expired", "groups", "two_fa_send_to", "totp_secret")
GROUP_KEYS = ("name", "permissions", "tunnels_restricted", "commands_restricted")


def users_of(request: web.Request) -> UserStore:
    users = server_of(request).users
    assert users is not None
    return users


def accounts_of(request: web.Request) -> AccountService:
    return server_of(request).accounts


def not_static(handler: Handler) -> Handler:
    """400 when users come from the single ``[api] auth`` pair."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if users_of(request).source == SOURCE_STATIC:
            raise bad_request(STATIC_SOURCE)
        return await handler(request)

    return guarded


def totp_enabled(handler: Handler) -> Handler:
    """400 ``TotP is disabled`` unless ``[api] totp_enabled``."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not server_of(request).config.api.totp_enabled:
            raise bad_request(TOTP_DISABLED)
        return await handler(request)

    return guarded


def user_payload(user: User) -> dict[str, Any]:
    """A ``GET /users`` item (upstream leaves the permission fields empty there)."""
    return {
        "username": user.username,
        "password_expired": user.password_expired,
        "groups": user.groups or None,
        "two_fa_send_to": user.two_fa_send_to,
        "effective_user_permissions": None,
        "effective_extended_permissions": {
            "tunnels_restricted": None,
            "commands_restricted": None,
        },
        "group_permissions_enabled": False,
    }


def user_change(body: dict[str, Any]) -> UserChange:
    groups = expect_type(body, "groups", list, None)
    if groups is not None and not all(isinstance(g, str) for g in groups):
        raise ApiError(400, "Invalid JSON data.", "json: field 'groups' must hold strings")
    expired = body.get("password_expired")
    if expired is not None and not isinstance(expired, bool):
        raise ApiError(400, "Invalid JSON data.", "json: field 'password_expired' must be a bool")
    return UserChange(
        username=expect_type(body, "username", str, ""),
        password=expect_type(body, "password", str, ""),
        password_expired=expired,
        groups=groups,
        two_fa_send_to=expect_type(body, "two_fa_send_to", str, ""),
        totp_secret=expect_type(body, "totp_secret", str, "") or None,
    )


# --- users -------------------------------------------------------------------------


@admin_only
@not_static
async def list_users(request: web.Request) -> web.Response:
    return envelope([user_payload(u) for u in await users_of(request).list_users()])


@writes_replicated
@admin_only
@not_static
async def create_user(request: web.Request) -> web.Response:
    body = await read_json(request, USER_KEYS)
    await accounts_of(request).create_user(user_change(body))
    return created_empty()


@writes_replicated
@admin_only
@not_static
async def update_user(request: web.Request) -> web.Response:
    body = await read_json(request, USER_KEYS)
    await accounts_of(request).update_user(request.match_info["user_id"], user_change(body))
    return no_content()


@writes_replicated
@admin_only
@not_static
async def delete_user(request: web.Request) -> web.Response:
    await accounts_of(request).delete_user(request.match_info["user_id"])
    return no_content()


@writes_replicated
@admin_only
@not_static
@totp_enabled
async def delete_user_totp(request: web.Request) -> web.Response:
    username = request.match_info["user_id"]
    if await users_of(request).get(username) is None:
        raise not_found("user not found")
    await accounts_of(request).update_user(username, UserChange(totp_secret=""))
    return no_content()


# --- sessions ----------------------------------------------------------------------


@admin_only
async def list_user_sessions(request: web.Request) -> web.Response:
    sessions = server_of(request).sessions
    assert sessions is not None
    found = await sessions.list_for(request.match_info["user_id"])
    return envelope([s.to_json() for s in found])


@admin_only
@writes_replicated
async def delete_user_sessions(request: web.Request) -> web.Response:
    sessions = server_of(request).sessions
    assert sessions is not None
    await sessions.delete_for(request.match_info["user_id"])
    return no_content()


@admin_only
@writes_replicated
async def delete_user_session(request: web.Request) -> web.Response:
    sessions = server_of(request).sessions
    assert sessions is not None
    username = request.match_info["user_id"]
    raw = request.match_info["session_id"]
    try:
        session_id = int(raw)
    except ValueError:
        raise bad_request(
            f'unable to parse session ID "{raw}" for user "{username}"',
            f'strconv.ParseInt: parsing "{raw}": invalid syntax',
        ) from None
    await sessions.delete_of(username, session_id)
    return no_content()


# --- user groups -------------------------------------------------------------------


def _groups_supported(store: UserStore) -> None:
    if store.source == SOURCE_STATIC:
        raise bad_request(STATIC_NO_GROUPS)
    if store.source == SOURCE_FILE:
        raise bad_request(FILE_NO_GROUPS)


def _details_required(store: UserStore) -> None:
    _groups_supported(store)
    if isinstance(store, DbUserStore) and not store.details_t:
        raise bad_request(NO_DETAILS_TABLE)


async def _group(store: UserStore, name: str) -> UserGroup:
    found = await store.get_group(name)
    return found if found is not None else UserGroup(name)


@admin_only
async def list_groups(request: web.Request) -> web.Response:
    store = users_of(request)
    _groups_supported(store)
    return envelope([g.to_json() for g in await store.groups()])


@admin_only
@not_static
async def get_group(request: web.Request) -> web.Response:
    store = users_of(request)
    _groups_supported(store)
    return envelope((await _group(store, request.match_info["group_name"])).to_json())


def _permissions(body: dict[str, Any]) -> dict[str, bool]:
    raw = body.get("permissions")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ApiError(400, "Invalid JSON data.", "json: field 'permissions' must be an object")
    for key, value in raw.items():
        if key not in PERMISSIONS:
            raise ApiError(400, "Invalid JSON data.", f"invalid permission: {key}")
        if not isinstance(value, bool):
            raise ApiError(400, "Invalid JSON data.", f"json: permission {key!r} must be a bool")
    return {str(k): bool(v) for k, v in raw.items()}


@writes_replicated
@admin_only
@not_static
async def update_group(request: web.Request) -> web.Response:
    store = users_of(request)
    _details_required(store)
    body = await read_json(request, GROUP_KEYS)
    name = request.match_info["group_name"]
    await store.put_group(UserGroup(name, _permissions(body)))
    return envelope((await _group(store, name)).to_json())


@writes_replicated
@admin_only
@not_static
async def delete_group(request: web.Request) -> web.Response:
    store = users_of(request)
    _details_required(store)
    await store.delete_group(request.match_info["group_name"])
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("GET", "/users", list_users),
        ("POST", "/users", create_user),
        ("PUT", "/users/{user_id}", update_user),
        ("DELETE", "/users/{user_id}", delete_user),
        ("DELETE", "/users/{user_id}/totp-secret", delete_user_totp),
        ("GET", "/users/{user_id}/sessions", list_user_sessions),
        ("DELETE", "/users/{user_id}/sessions", delete_user_sessions),
        ("DELETE", "/users/{user_id}/sessions/{session_id}", delete_user_session),
        ("GET", "/user-groups", list_groups),
        ("GET", "/user-groups/{group_name}", get_group),
        ("PUT", "/user-groups/{group_name}", update_group),
        ("DELETE", "/user-groups/{group_name}", delete_group),
    ]
    for method, path, handler in routes:
        r.add_route(method, "/api/v1" + path, handler)
