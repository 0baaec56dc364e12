"""The API application: middlewares, typed state and every view's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rportd.api import audit, middlewares
from rportd.api.context import AUTH_KEY, SERVER_KEY
from rportd.api.security import Authenticator
from rportd.api.views import (
    auditlog,
    client_acl,
    client_groups,
    clients,
    clients_auth,
    ha,
    jobs,
    jobs_ws,
    library,
    login,
    me,
    monitoring,
    schedules,
    status,
    stored_tunnels,
    tunnels,
    twofa,
    uploads,
    users,
    vault,
)

if TYPE_CHECKING:
    from rportd.app import RportServer

VIEWS = (
    login,
    status,
    clients,
    ha,
    tunnels,
    stored_tunnels,
    clients_auth,
    users,
    me,
    twofa,
    client_groups,
    client_acl,
    auditlog,
    jobs,
    jobs_ws,
    library,
    schedules,
    vault,
    uploads,
    monitoring,
)


def create_api_app(server: RportServer) -> web.Application:
    """Build the aiohttp application serving ``/api/v1`` for ``server``."""
    cfg = server.config.api
    app = web.Application(
        client_max_size=cfg.max_request_bytes,
        middlewares=[
            middlewares.errors,
            middlewares.body_deadline,
            middlewares.ip_ban,
            middlewares.authentication,
            middlewares.replica_writes,
            audit.audit,
        ],
    )
    assert server.users is not None and server.sessions is not None
    app[SERVER_KEY] = server
    authenticator = Authenticator(
        server.users,
        server.sessions,
        server.tokens_issuer,
        server.api_logins,
        password_basic_auth=not (cfg.two_fa_enabled or cfg.totp_enabled),
    )
    if server.api_tokens is not None:
        authenticator.token_verifier = server.api_tokens.verify
    app[AUTH_KEY] = authenticator
    for view in VIEWS:
        view.setup(app)
    return app
