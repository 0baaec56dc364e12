"""The API side of two-factor login: ``/login`` answers a scoped token while a code is due."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rportd.api.responses import envelope
from rportd.auth.twofactor import TwoFactorService
from rportd.auth.users import User
from rportd.httputil import client_ip

if TYPE_CHECKING:
    from rportd.app import RportServer


class ApiTwoFactorLogin:
    """Implements ``RportServer.two_factor`` on top of :class:`TwoFactorService`."""

    def __init__(self, server: RportServer, service: TwoFactorService) -> None:
        self.server = server
        self.service = service

    async def begin_login(self, request: web.Request, user: User, lifetime: int) -> web.Response:
        """Send a code (or open a TOTP login) and answer a token good only for ``/verify-2fa``."""
        agent = request.headers.get("User-Agent", "")
        ip = client_ip(request)
        challenge = await self.service.start(user, agent, ip)
        sessions = self.server.sessions
        assert sessions is not None
        session = await sessions.create(user.username, lifetime, agent, ip)
        token = self.server.tokens_issuer.issue(user.username, session.session_id, challenge.scopes)
        return envelope({"token": token, "two_fa": challenge.to_json()})
