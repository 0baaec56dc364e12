"""``POST /verify-2fa``: trade a delivered or TOTP code for a full token (api.md §1.4)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import AUTH_KEY, identity_of, server_of
from rportd.api.errors import ApiError, forbidden, unauthorized
from rportd.api.guards import bearer_only
from rportd.api.responses import envelope, expect_type, read_json
from rportd.api.security import TOO_MANY
from rportd.api.views.login import token_lifetime
from rportd.auth.jwt import ALL_SCOPES
from rportd.auth.twofactor import TwoFactorError
from rportd.httputil import client_ip


@bearer_only
async def verify_2fa(request: web.Request) -> web.Response:
    server = server_of(request)
    service = server.two_fa
    if service is None:
        raise ApiError(409, "2fa is disabled")
    auth = request.app[AUTH_KEY]
    body = await read_json(request, ("username", "token"))
    username = expect_type(body, "username", str, "")
    code = expect_type(body, "token", str, "")
    ip = client_ip(request)
    if auth.logins.refuse(username, ip):
        raise ApiError(429, TOO_MANY)
    if not username:
        raise unauthorized("username is required")
    if not code:
        raise unauthorized("token is required")
    lifetime = token_lifetime(request)
    identity = identity_of(request)
    if identity.username != username:
        auth.logins.failed(username, ip)
        raise forbidden("access denied")
    try:
        service.verify(identity.user, code)
    except TwoFactorError:
        auth.logins.failed(username, ip)
        raise
    sessions = server.sessions
    assert sessions is not None
    if identity.session is not None:
        await sessions.delete(identity.session.session_id)
    agent = request.headers.get("User-Agent", "")
    session = await sessions.create(username, lifetime, agent, ip)
    token = server.tokens_issuer.issue(username, session.session_id, ALL_SCOPES)
    return envelope({"token": token, "two_fa": None})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/verify-2fa", verify_2fa)
