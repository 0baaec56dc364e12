"""``PUT /me``, personal API tokens (``/me/tokens``) and the own TOTP secret (api.md §5.2-5.3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, bad_request, not_found
from rportd.api.guards import writes_replicated
from rportd.api.responses import envelope, expect_type, json_response, no_content, read_json
from rportd.api.views.users import totp_enabled
from rportd.auth.accounts import UserChange
from rportd.auth.tokens import (
    PREFIX_LENGTH,
    SCOPE_CLIENTS_AUTH,
    SCOPES,
    ApiTokenStore,
    TokenNameTaken,
    TokenNotFound,
)
from rportd.auth.totp import InvalidTotpSecret, TotpKey, stored_key
from rportd.gotypes import format_time, parse_time

TOKEN_GONE = "use new token management on /me/tokens"
NO_TOTP = "time based one time secret key should be generated for this user"


def tokens_of(request: web.Request) -> ApiTokenStore:
    tokens = server_of(request).api_tokens
    assert tokens is not None
    return tokens


@writes_replicated
async def change_me(request: web.Request) -> web.Response:
    body = await read_json(request, ("username", "password", "old_password", "two_fa_send_to"))
    await server_of(request).accounts.change_me(
        identity_of(request).user,
        username=expect_type(body, "username", str, ""),
        password=expect_type(body, "password", str, ""),
        old_password=expect_type(body, "old_password", str, ""),
        two_fa_send_to=expect_type(body, "two_fa_send_to", str, ""),
    )
    return no_content()


async def token_gone(request: web.Request) -> web.Response:
    raise ApiError(410, TOKEN_GONE)


# --- API tokens --------------------------------------------------------------------


def _expires_at(body: dict[str, Any]) -> datetime | None:
    raw = body.get("expires_at")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("json: field 'expires_at' must be an RFC 3339 time string")
    try:
        return parse_time(raw)
    except ValueError:
        raise ValueError(
            f'parsing time "{raw}": expected RFC 3339, e.g. 2025-01-31T12:00:00Z'
        ) from None


async def list_tokens(request: web.Request) -> web.Response:
    mine = tokens_of(request).list_for(identity_of(request).username)
    return envelope([t.to_api() for t in mine])


@writes_replicated
async def create_token(request: web.Request) -> web.Response:
    identity = identity_of(request)
    try:
        body = await read_json(request, ("scope", "name", "expires_at"))
        scope = expect_type(body, "scope", str, "")
        name = expect_type(body, "name", str, "")
        expires_at = _expires_at(body)
    except ApiError as exc:
        detail = exc.items[0].detail or exc.title
        raise ApiError(400, "Invalid JSON data", detail) from None
    except ValueError as exc:
        raise ApiError(400, "Invalid JSON data", str(exc)) from None
    if scope not in SCOPES:
        raise bad_request("missing or invalid scope.")
    if not name or len(name.encode()) >= 250:
        raise bad_request("missing or invalid name.", "field name is required, 250 characters max")
    if scope == SCOPE_CLIENTS_AUTH and not identity.is_admin:
        raise bad_request(
            "current user should belong to Administrators group to create a token with this scope"
        )
    try:
        token, clear = await tokens_of(request).create(identity.username, name, scope, expires_at)
    except TokenNameTaken as exc:
        raise bad_request(str(exc)) from None
    return envelope(
        {
            "prefix": token.prefix,
            "expires_at": format_time(token.expires_at),
            "scope": token.scope,
            "token": clear,
        }
    )


def _prefix(request: web.Request) -> str:
    prefix = request.match_info["prefix"]
    if len(prefix) != PREFIX_LENGTH:
        raise bad_request("missing or invalid token prefix.")
    return prefix


@writes_replicated
async def update_token(request: web.Request) -> web.Response:
    prefix = _prefix(request)
    body = await read_json(request, ("expires_at", "name"))
    name = expect_type(body, "name", str, "")
    try:
        expires_at = _expires_at(body)
    except ValueError as exc:
        raise ApiError(400, "Invalid JSON data.", str(exc)) from None
    try:
        await tokens_of(request).update(identity_of(request).username, prefix, name, expires_at)
    except TokenNameTaken as exc:
        raise bad_request(str(exc)) from None
    except TokenNotFound:
        raise not_found(f"cannot find API Token by prefix {prefix}") from None
    data: dict[str, Any] = {"prefix": prefix}
    if name:
        data["name"] = name
    if expires_at is not None:
        data["expires_at"] = format_time(expires_at)
    return envelope(data)


@writes_replicated
async def delete_token(request: web.Request) -> web.Response:
    prefix = _prefix(request)
    try:
        await tokens_of(request).delete(identity_of(request).username, prefix)
    except TokenNotFound:
        raise not_found(f"cannot find API Token by prefix {prefix}") from None
    return no_content()


# --- own TOTP secret ---------------------------------------------------------------


def _own_key(request: web.Request) -> TotpKey | None:
    try:
        return stored_key(identity_of(request).user.totp_secret)
    except InvalidTotpSecret as exc:
        raise ApiError(500, f"failed to convert the TotP secret: {exc}") from None


@totp_enabled
async def get_totp(request: web.Request) -> web.Response:
    key = _own_key(request)
    if key is None:
        raise not_found(NO_TOTP)
    return json_response(key.to_api())


@writes_replicated
@totp_enabled
async def create_totp(request: web.Request) -> web.Response:
    server = server_of(request)
    user = identity_of(request).user
    if _own_key(request) is not None:
        raise ApiError(409, "cannot create new totP secret when another one already exists")
    key = TotpKey.generate(user.username, server.config.api.totp_account_name)
    await server.accounts.update_user(user.username, UserChange(totp_secret=key.url))
    return json_response(key.to_api())


@writes_replicated
@totp_enabled
async def delete_totp(request: web.Request) -> web.Response:
    server = server_of(request)
    await server.accounts.update_user(identity_of(request).username, UserChange(totp_secret=""))
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_put("/api/v1/me", change_me)
    r.add_get("/api/v1/me/token", token_gone)
    r.add_post("/api/v1/me/token", token_gone)
    r.add_put("/api/v1/me/token/{_}", token_gone)
    r.add_delete("/api/v1/me/token/{_}", token_gone)
    r.add_get("/api/v1/me/tokens", list_tokens)
    r.add_post("/api/v1/me/tokens", create_token)
    r.add_put("/api/v1/me/tokens/{prefix}", update_token)
    r.add_delete("/api/v1/me/tokens/{prefix}", delete_token)
    r.add_get("/api/v1/me/totp-secret", get_totp)
    r.add_post("/api/v1/me/totp-secret", create_totp)
    r.add_delete("/api/v1/me/totp-secret", delete_totp)
