"""Login behind an authenticating reverse proxy: ``[api] auth_header``, ``user_header``,
``create_missing_users`` and ``default_user_group`` (api.md §1.3)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from rportd.config import load_config
from tests.access.conftest import default_users_file
from tests.conftest import ServerFactory, api_base

PROXY = {"X-Proxy-Authenticated": "yes"}


def users_in(path: Path) -> dict[str, list[str]]:
    return {u["username"]: u["groups"] for u in json.loads(path.read_text())}


async def proxied_login(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    async with http.get(base + "/login", headers=headers) as resp:
        return resp.status, await resp.json()


async def me(http: aiohttp.ClientSession, base: str, token: str) -> dict[str, object]:
    async with http.get(base + "/me", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        body = await resp.json()
        return dict(body["data"])


async def proxied_server(
    make_server: ServerFactory, tmp_path: Path, **api: object
) -> tuple[str, Path]:
    """A server with users in a file behind a proxy (``X-Proxy-Authenticated``)."""
    users = default_users_file(tmp_path / "users.json")
    server = await make_server(
        api={"auth": None, "auth_file": str(users), "auth_header": "X-Proxy-Authenticated", **api}
    )
    return api_base(server), users


async def test_known_user_logs_in_without_password(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    base, users = await proxied_server(make_server, tmp_path, user_header="X-Proxy-User")
    status, body = await proxied_login(http, base, {**PROXY, "X-Proxy-User": "bob"})
    assert status == 200, body
    token = body["data"]["token"]  # type: ignore[index]
    assert (await me(http, base, token))["username"] == "bob"

    # Without the proxy's header, the user header alone proves nothing.
    status, body = await proxied_login(http, base, {"X-Proxy-User": "bob"})
    assert status == 401
    assert body["errors"][0]["title"] == "auth is required"  # type: ignore[index]
    # An empty user header is refused with upstream's words.
    status, body = await proxied_login(http, base, PROXY)
    assert status == 401
    assert body["errors"][0]["title"] == "username is required"  # type: ignore[index]
    # Unknown users are not created unless create_missing_users is on.
    status, body = await proxied_login(http, base, {**PROXY, "X-Proxy-User": "mallory"})
    assert status == 401
    assert "mallory" not in users_in(users)


async def test_missing_users_are_created_in_the_default_group(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    base, users = await proxied_server(  # user_header: Authentication-User
        make_server, tmp_path, create_missing_users=True, default_user_group="Operators"
    )
    status, body = await proxied_login(http, base, {**PROXY, "Authentication-User": "dave"})
    assert status == 200, body
    token = body["data"]["token"]  # type: ignore[index]
    info = await me(http, base, token)
    assert (info["username"], info["groups"]) == ("dave", ["Operators"])
    assert users_in(users)["dave"] == ["Operators"]

    # The created account has a random password: no password logs in with basic auth.
    basic = {"Authorization": aiohttp.encode_basic_auth("dave", "")}
    async with http.get(base + "/login", headers=basic) as resp:
        assert resp.status == 401


async def test_default_group_is_administrators(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    base, users = await proxied_server(make_server, tmp_path, create_missing_users=True)
    status, _ = await proxied_login(http, base, {**PROXY, "Authentication-User": "erin"})
    assert status == 200
    assert users_in(users)["erin"] == ["Administrators"]


def test_proxy_keys_without_auth_header_are_reported() -> None:
    api = {"address": "127.0.0.1:0", "auth_file": "/u.json", "create_missing_users": True}
    config = load_config(None, {"server": {"auth": "c:p"}, "api": api})
    assert any(
        "'create_missing_users' only apply to logins through a reverse proxy" in w
        and "'auth_header'" in w
        for w in config.warnings
    )
    api["auth_header"] = "X-Proxy-Authenticated"
    config = load_config(None, {"server": {"auth": "c:p"}, "api": api})
    assert not any("reverse proxy" in w for w in config.warnings)
