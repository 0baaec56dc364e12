"""Keys of upstream's configuration that rportd cannot honour: the server refuses to start.

Each one changes what upstream does (ACME certificates, the noVNC app, Guacamole RDP,
caddy, the Plus plugin and its alerting); running without it while the operator believes
it is on would be worse than stopping with the key named.
"""

from __future__ import annotations

import dataclasses

from rportd.config.model import Config, NotificationsConfig

_CERTBOT = "get a certificate (for example with certbot) and set"


def refusals(config: Config) -> list[str]:
    """One sentence per key that is set but not supported (empty: all is well)."""
    server, api = config.server, config.api
    found: list[str] = []
    if api.enable_acme:
        found.append(
            "[api] enable_acme: rportd does not obtain Let's Encrypt certificates; "
            f"{_CERTBOT} [api] cert_file and key_file"
        )
    if server.tunnel_enable_acme:
        found.append(
            "[server] tunnel_enable_acme: rportd does not obtain Let's Encrypt certificates; "
            f"{_CERTBOT} [server] tunnel_proxy_cert_file and tunnel_proxy_key_file"
        )
    if server.acme_http_port:
        found.append(
            "[server] acme_http_port: only used for ACME, which rportd does not do; remove it"
        )
    if server.novnc_root:
        found.append(
            "[server] novnc_root: rportd does not serve the noVNC web app; its tunnel proxy "
            "offers the WebSocket bridge on /vnc to a noVNC served elsewhere; remove novnc_root"
        )
    if server.guacd_address:
        found.append(
            "[server] guacd_address: RDP in the browser through guacd is not supported by "
            "rportd; remove guacd_address"
        )
    caddy = [k for k, v in dataclasses.asdict(config.caddy).items() if v]
    if caddy:
        found.append(
            f"[caddy-integration] {', '.join(caddy)}: the caddy integration is not supported "
            "by rportd; remove the section (tunnels keep their own ports)"
        )
    defaults = dataclasses.asdict(NotificationsConfig())
    notifications = [
        k for k, v in dataclasses.asdict(config.notifications).items() if v != defaults[k]
    ]
    if notifications:
        found.append(
            f"[notifications] {', '.join(notifications)}: used only by the Plus alerting "
            "service, which rportd does not have; remove them"
        )
    if config.plus_plugin.plugin_path:
        found.append(
            "[plus-plugin] plugin_path: rportd cannot load upstream's Plus plugin; remove it "
            "(the [plus-*] sections are then ignored, as upstream ignores them without it)"
        )
    return found


__all__ = ["refusals"]
