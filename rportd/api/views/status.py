"""``GET /status``: server summary (api.md §5.1)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.responses import envelope


async def status(request: web.Request) -> web.Response:
    server = server_of(request)
    cfg = server.config
    registry = server.clients.registry
    users = server.users
    summary = {
        "version": server.version,
        "clients_connected": registry.connected_count,
        "clients_disconnected": registry.disconnected_count,
        "fingerprint": server.fingerprint,
        "connect_url": server.connect_urls,
        "pairing_url": cfg.server.pairing_url,
        "clients_auth_source": server.credentials.source,
        "clients_auth_mode": "Read Write"
        if server.credentials.writable and cfg.server.auth_write
        else "Read Only",
        "users_auth_source": users.source if users else "",
        "group_permissions_enabled": bool(users and users.group_permissions_enabled),
        "two_fa_enabled": cfg.api.two_fa_enabled or cfg.api.totp_enabled,
        "two_fa_delivery_method": server.two_fa_delivery_method,
        "auditlog": {
            "enabled": cfg.api.enable_audit_log,
            "rotation": cfg.api.audit_log_rotation,
        },
        "auth_header": bool(cfg.api.auth_header),
        "tunnel_host": cfg.server.tunnel_host,
        "tunnel_proxy_enabled": cfg.server.tunnel_proxy_enabled,
        "caddy_integration_enabled": cfg.caddy.enabled,
        "excluded_ports": cfg.server.excluded_ports,
        "used_ports": cfg.server.used_ports,
        "monitoring_enabled": cfg.monitoring.enabled,
        "password_min_length": cfg.api.password_min_length,
    }
    # Upstream answers a Go map: keys sorted, which is the order the web UI shows them in.
    return envelope(dict(sorted(summary.items())))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/status", status)
