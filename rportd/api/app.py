"""The API application: middlewares, typed state and every view's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from rportd.api import audit, cors, middlewares, webui
from rportd.api.context import AUTH_KEY, SERVER_KEY
from rportd.api.request_metrics import request_metrics
from rportd.api.security import Authenticator
from rportd.api.views import (
    auditlog,
    client_acl,
    client_attributes,
    client_groups,
    clients,
    clients_auth,
    ha,
    ha_page,
    health,
    jobs,
    jobs_ws,
    library,
    login,
    me,
    metrics,
    monitoring,
    openapi,
    schedules,
    status,
    stored_tunnels,
    tunnels,
    twofa,
    uploads,
    users,
    vault,
    ws_test_pages,
)
from rportd.cors import CorsPolicy, valid_origins

if TYPE_CHECKING:
    from rportd.app import RportServer

VIEWS = (
    health,
    metrics,
    openapi,
    ha_page,
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
    client_attributes,
    auditlog,
    jobs,
    jobs_ws,
    library,
    schedules,
    vault,
    uploads,
    monitoring,
)


def create_api_app(server: RportServer, doc_root: webui.DocRoot | None = None) -> web.Application:
    """Build the aiohttp application serving ``/api/v1`` for ``server``, and the web UI
    files of ``doc_root`` at ``/``."""
    cfg = server.config.api
    chain: list[Middleware] = [request_metrics]
    origins = valid_origins(cfg.cors)
    if origins:
        chain.append(cors.middleware(CorsPolicy.from_config(origins)))
    chain.append(middlewares.errors)
    if doc_root is not None:
        chain.append(webui.middleware(doc_root))
    chain += [
        middlewares.synchronous_replication,
        middlewares.ip_ban,
        middlewares.authentication,
        middlewares.replica_writes,
        audit.audit,
    ]
    app = web.Application(client_max_size=cfg.max_request_bytes, middlewares=chain)
    assert server.users is not None and server.sessions is not None
    app[SERVER_KEY] = server
    authenticator = Authenticator(
        server.users,
        server.sessions,
        server.tokens_issuer,
        server.api_login_wait,
        server.api_ip_ban,
        password_basic_auth=not (cfg.two_fa_enabled or cfg.totp_enabled),
    )
    if server.api_tokens is not None:
        authenticator.token_verifier = server.api_tokens.verify
    app[AUTH_KEY] = authenticator
    for view in VIEWS:
        view.setup(app)
    if cfg.enable_ws_test_endpoints:
        ws_test_pages.setup(app)
    return app
