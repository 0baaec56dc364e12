"""Keys rportd cannot honour stop the server with the key named (none is silently ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rportd.app import StartupError
from tests.access.conftest import default_users_file
from tests.conftest import ServerFactory


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"api": {"enable_acme": True, "base_url": "https://rport.example.com"}}, "enable_acme"),
        ({"server": {"tunnel_enable_acme": True}}, "tunnel_enable_acme"),
        ({"server": {"acme_http_port": 80}}, "acme_http_port"),
        ({"server": {"novnc_root": "/var/lib/rport/novnc"}}, "novnc_root"),
        ({"server": {"guacd_address": "127.0.0.1:4822"}}, "guacd_address"),
        ({"caddy": {"caddy": "/usr/bin/caddy", "subdomain_prefix": "t.example.com"}},
         "[caddy-integration] caddy, subdomain_prefix"),
        ({"notifications": {"notification_script_dir": "/srv/scripts"}},
         "[notifications] notification_script_dir"),
        ({"plus_plugin": {"plugin_path": "/usr/local/lib/rport/rport-plus.so"}},
         "[plus-plugin] plugin_path"),
    ],
)  # fmt: skip
async def test_unsupported_key_stops_the_server(
    make_server: ServerFactory, sections: dict[str, Any], named: str
) -> None:
    with pytest.raises(StartupError, match="cannot honour") as err:
        await make_server(**sections)
    assert named in str(err.value)


async def test_default_notifications_are_accepted(make_server: ServerFactory) -> None:
    server = await make_server(notifications={"cleanup_interval": "1d"})  # the default
    assert server.api_address is not None


async def test_pushover_needs_a_user_key(make_server: ServerFactory, tmp_path: Path) -> None:
    users = default_users_file(tmp_path / "users.json")
    with pytest.raises(StartupError) as err:
        await make_server(
            api={"auth": None, "auth_file": str(users), "two_fa_token_delivery": "pushover"},
            pushover={"api_token": "app-token"},
        )
    assert str(err.value) == (
        "API: invalid pushover.api_token and pushover.user_key: pushover user key cannot be empty"
    )
