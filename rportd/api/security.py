"""Who is calling: HTTP basic (password or API token) or a bearer JWT (api.md §1.1)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from rportd.api.errors import ApiError, unauthorized
from rportd.auth.jwt import InvalidToken, TokenClaims, TokenIssuer
from rportd.auth.passwords import verify_password
from rportd.auth.sessions import ApiSession, ApiSessionStore
from rportd.auth.throttle import LoginThrottle
from rportd.auth.users import ADMIN_GROUP, User, UserStore
from rportd.httputil import client_ip

TOO_MANY = "too many requests, please try later"
SCOPE_DENIED = "the scope of the provided token is not authorized for this operation"
PASSWORD_EXPIRED = "password has expired, please change your password"

TokenVerifier = Callable[[str, str], Awaitable[str | None]]
"""``(username, "<prefix>_<secret>")`` → the token's scope, or ``None`` if invalid."""


@dataclass
class Identity:
    """The authenticated caller of a request."""

    user: User
    permissions: dict[str, bool]
    session: ApiSession | None = None
    claims: TokenClaims | None = None
    token_scope: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def groups(self) -> list[str]:
        return self.user.groups

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.user.groups


def basic_credentials(request: web.BaseRequest) -> tuple[str, str] | None:
    """``(user, secret)`` from an ``Authorization: Basic`` header."""
    header = request.headers.get("Authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep else None


def bearer_token(request: web.BaseRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


class Authenticator:
    """Checks credentials against the user source, sessions and API tokens."""

    def __init__(
        self,
        users: UserStore,
        sessions: ApiSessionStore,
        issuer: TokenIssuer,
        logins: LoginThrottle,
        *,
        password_basic_auth: bool = True,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.issuer = issuer
        self.logins = logins
        self.password_basic_auth = password_basic_auth
        self.token_verifier: TokenVerifier | None = None

    def _failed(self, username: str, ip: str) -> ApiError:
        self.logins.failed(username, ip)
        return unauthorized()

    async def check_password(self, username: str, password: str, ip: str) -> User:
        """The user if ``password`` is right; 429 while the name waits, else 401."""
        if self.logins.refuse(username, ip):
            raise ApiError(429, TOO_MANY)
        user = await self.users.get(username)
        if user is None or not await verify_password(user.password, password):
            raise self._failed(username, ip)
        self.logins.succeeded(ip)
        return user

    async def identity(
        self,
        user: User,
        *,
        session: ApiSession | None = None,
        claims: TokenClaims | None = None,
        token_scope: str | None = None,
    ) -> Identity:
        permissions = await self.users.effective_permissions(user)
        return Identity(user, permissions, session, claims, token_scope)

    async def authenticate(self, request: web.Request, *, bearer_only: bool = False) -> Identity:
        """Authenticate a request to a protected route."""
        ip = client_ip(request)
        basic = None if bearer_only else basic_credentials(request)
        if basic is not None:
            return await self._basic(request, *basic, ip)
        token = bearer_token(request)
        if token is None and request.path.startswith("/api/v1/ws/"):
            token = request.query.get("access_token")
            if token is None:
                raise unauthorized("token required")
        if token is None:
            raise unauthorized()
        return await self._bearer(request, token, ip)

    async def _basic(self, request: web.Request, username: str, secret: str, ip: str) -> Identity:
        if self.logins.refuse(username, ip):
            raise ApiError(429, TOO_MANY)
        user = await self.users.get(username)
        if user is None:
            raise self._failed(username, ip)
        scope: str | None = None
        prefix, sep, _ = secret.partition("_")
        if sep and len(prefix) == 8 and self.token_verifier is not None:
            scope = await self.token_verifier(username, secret)
        if scope is None and (
            not self.password_basic_auth or not await verify_password(user.password, secret)
        ):
            raise self._failed(username, ip)
        if user.password_expired:
            raise unauthorized(PASSWORD_EXPIRED)
        self.logins.succeeded(ip)
        return await self.identity(user, token_scope=scope)

    async def _bearer(self, request: web.Request, token: str, ip: str) -> Identity:
        try:
            claims = self.issuer.verify(token)
        except InvalidToken:
            self.logins.ban.failed(ip)
            raise unauthorized() from None
        session = await self.sessions.get(claims.session_id)
        if session is None or session.username != claims.username:
            raise unauthorized()
        if not claims.allows(request.path, request.method):
            raise unauthorized()
        user = await self.users.get(claims.username)
        if user is None:
            raise unauthorized()
        self.sessions.touch(session, request.headers.get("User-Agent", ""), ip)
        return await self.identity(user, session=session, claims=claims)


def check_token_scope(identity: Identity, request: web.Request) -> None:
    """Refuse requests outside an API token's scope (403; upstream answers 500)."""
    scope = identity.token_scope
    if scope is None or scope == "read+write":
        return
    path = request.path
    if scope == "read" and request.method == "GET" and "/ws" not in path:
        return
    if scope == "clients-auth" and "clients-auth" in path:
        return
    raise ApiError(403, SCOPE_DENIED)
