"""``/login``, ``/logout``, ``/auth/provider``, ``/plus/status``."""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from rportd.api.context import AUTH_KEY, identity_of, server_of
from rportd.api.errors import ApiError, bad_request, unauthorized
from rportd.api.guards import public
from rportd.api.responses import envelope, expect_type, no_content, read_json
from rportd.api.security import PASSWORD_EXPIRED, TOO_MANY, basic_credentials, bearer_token
from rportd.auth.accounts import UserChange
from rportd.auth.jwt import ALL_SCOPES, InvalidToken
from rportd.auth.sessions import DEFAULT_LIFETIME, MAX_LIFETIME
from rportd.auth.users import User
from rportd.httputil import client_ip

log = logging.getLogger(__name__)


def token_lifetime(request: web.Request) -> int:
    """Seconds from ``?token-lifetime=`` (default 600, at most 90 days)."""
    text = request.query.get("token-lifetime", "") or "0"
    try:
        value = int(text)
    except ValueError:
        raise bad_request(
            f'invalid token-lifetime : strconv.ParseInt: parsing "{text}": invalid syntax'
        ) from None
    if value > MAX_LIFETIME:
        raise bad_request(f"requested token lifetime exceeds max allowed {MAX_LIFETIME}")
    return value if value > 0 else DEFAULT_LIFETIME


async def proxied_user(request: web.Request, username: str) -> User:
    """The user a reverse proxy vouched for (``[api] auth_header``), created if allowed.

    An unknown user is created (random password, group ``default_user_group``) only with
    ``create_missing_users = true``; otherwise the login is refused.
    """
    server = server_of(request)
    cfg = server.config.api
    assert server.users is not None
    user = await server.users.get(username)
    if user is not None:
        return user
    if not cfg.create_missing_users:
        request.app[AUTH_KEY].ip_ban.failed(client_ip(request))
        raise unauthorized()
    change = UserChange(
        username=username, password=secrets.token_urlsafe(32), groups=[cfg.default_user_group]
    )
    user = await server.accounts.create_user(change)
    log.info(
        "created API user %r (group %r) on a login through %s",
        username,
        cfg.default_user_group,
        cfg.auth_header,
    )
    return user


async def login(
    request: web.Request,
    username: str,
    password: str,
    new_password: str = "",
    *,
    proxied: bool = False,
) -> web.Response:
    """Check credentials and answer a bearer token (or start 2FA).

    ``proxied``: the username comes from a trusted reverse proxy; no password is checked.
    """
    server = server_of(request)
    auth = request.app[AUTH_KEY]
    if auth.login_wait.is_waiting(username):
        raise ApiError(429, TOO_MANY)
    if not username:
        raise unauthorized("username is required")
    ip = client_ip(request)
    if proxied:
        user = await proxied_user(request, username)
    else:
        user = await auth.check_password(username, password, ip)
    lifetime = token_lifetime(request)
    if new_password:
        user = await server.accounts.change_password(user, new_password)
    if user.password_expired:
        raise unauthorized(PASSWORD_EXPIRED)
    agent = request.headers.get("User-Agent", "")
    if server.two_factor is not None:
        return await server.two_factor.begin_login(request, user, lifetime)
    assert server.sessions is not None
    session = await server.sessions.create(username, lifetime, agent, ip)
    token = server.tokens_issuer.issue(username, session.session_id, ALL_SCOPES)
    return envelope({"token": token, "two_fa": None})


@public
async def get_login(request: web.Request) -> web.Response:
    cfg = server_of(request).config.api
    if cfg.auth_header and request.headers.get(cfg.auth_header):
        return await login(request, request.headers.get(cfg.user_header, ""), "", proxied=True)
    creds = basic_credentials(request)
    if creds is None:
        request.app[AUTH_KEY].ip_ban.failed(client_ip(request))
        raise unauthorized("auth is required")
    return await login(request, *creds)


@public
async def post_login(request: web.Request) -> web.Response:
    content_type = request.headers.get("Content-Type", "")
    if content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        values = {k: str(form.get(k, "")) for k in ("username", "password", "new_password")}
    elif content_type == "application/json":
        body = await read_json(request, ("username", "password", "new_password"))
        values = {
            k: expect_type(body, k, str, "") for k in ("username", "password", "new_password")
        }
    else:
        request.app[AUTH_KEY].ip_ban.failed(client_ip(request))
        raise bad_request(f"unsupported content type: {content_type}")
    return await login(request, values["username"], values["password"], values["new_password"])


@public
async def logout(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if not token:
        raise unauthorized()
    server = server_of(request)
    try:
        claims = server.tokens_issuer.verify(token)
    except InvalidToken:
        raise unauthorized() from None
    assert server.sessions is not None
    if await server.sessions.get(claims.session_id) is None:
        raise unauthorized()
    await server.sessions.delete(claims.session_id)
    return no_content()


@public
async def auth_provider(request: web.Request) -> web.Response:
    return envelope(
        {
            "auth_provider": "built-in",
            "settings_uri": "",
            "device_settings_uri": "",
            "max_token_lifetime": server_of(request).config.api.max_token_lifetime,
        }
    )


@public
async def plus_status(request: web.Request) -> web.Response:
    return envelope(
        {
            "is_enabled": False,
            "is_trial": True,
            "valid_license": False,
            "lic_info": {"max_clients": 0, "max_users": 0},
            "plus_version": "",
            "build_time": "",
            "local_build": "",
            "rport_git_ref": "",
            "rport_commit_id": "",
        }
    )


async def me(request: web.Request) -> web.Response:
    identity = identity_of(request)
    server = server_of(request)
    assert server.users is not None
    return envelope(
        {
            "username": identity.username,
            "password_expired": False,
            "groups": identity.groups or None,
            "two_fa_send_to": identity.user.two_fa_send_to,
            "effective_user_permissions": identity.permissions,
            "effective_extended_permissions": await server.users.extended_permissions(
                identity.user
            ),
            "group_permissions_enabled": server.users.group_permissions_enabled,
        }
    )


async def my_ip(request: web.Request) -> web.Response:
    return envelope({"ip": client_ip(request)})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/login", get_login)
    r.add_post("/api/v1/login", post_login)
    r.add_delete("/api/v1/logout", logout)
    r.add_get("/api/v1/auth/provider", auth_provider)
    r.add_get("/api/v1/plus/status", plus_status)
    r.add_get("/api/v1/me", me)
    r.add_get("/api/v1/me/ip", my_ip)
