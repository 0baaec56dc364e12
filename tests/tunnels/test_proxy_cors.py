"""``[server] tunnel_cors``: CORS on the HTTPS tunnel proxy (PATCH and any header allowed)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.tunnels.conftest import ConnectClient
from tests.tunnels.test_proxy import self_signed, tls_client, web_port

__all__ = ["web_port"]  # the fixture, used by name

ALLOWED = "https://app.example.com"


async def proxied_tunnel(
    make_server: ServerFactory,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    web_port: int,
    *,
    tunnel: dict[str, str] | None = None,
    **sections: dict[str, object],
) -> str:
    """The URL of a page through an HTTPS-proxied tunnel to ``web_port``."""
    cert, key = self_signed(tmp_path)
    proxy = {"tunnel_proxy_cert_file": cert, "tunnel_proxy_key_file": key}
    server_keys = {**proxy, **sections.pop("server", {})}
    server = await make_server(server=server_keys, **sections)
    await connect_client(server)
    api = Api(http, api_base(server), ADMIN)
    params = {"remote": str(web_port), "scheme": "http", "http_proxy": "true", **(tunnel or {})}
    status, body = await api.put("/clients/c1/tunnels", params=params)
    assert status == 200, body
    return f"https://127.0.0.1:{body['data']['lport']}/page"


async def test_tunnel_proxy_cors(
    make_server: ServerFactory,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    web_port: int,
) -> None:
    url = await proxied_tunnel(
        make_server,
        tmp_path,
        http,
        connect_client,
        web_port,
        tunnel={"auth_user": "alice", "auth_password": "s3cret"},
        server={"tunnel_cors": [ALLOWED, "not-an-origin"]},
    )
    preflight = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "X-Custom, Authorization",
    }
    basic = {"Authorization": aiohttp.encode_basic_auth("alice", "s3cret")}
    async with tls_client() as browser:
        # Preflights carry no credentials: answered before the proxy's basic auth.
        async with browser.options(url, headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert resp.headers["Access-Control-Allow-Methods"] == "PATCH"
            assert resp.headers["Access-Control-Allow-Headers"] == "X-Custom, Authorization"
        async with browser.options(url, headers={**preflight, "Origin": "https://x.test"}) as resp:
            assert resp.status == 204
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with browser.get(url, headers={"Origin": ALLOWED, **basic}) as resp:
            assert resp.status == 200
            assert (await resp.text()).startswith("page /page")
            assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        async with browser.get(url, headers={"Origin": "https://x.test", **basic}) as resp:
            assert resp.status == 200
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_api_cors_does_not_reach_the_tunnel_proxy(
    make_server: ServerFactory,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    web_port: int,
) -> None:
    url = await proxied_tunnel(
        make_server, tmp_path, http, connect_client, web_port, api={"cors": [ALLOWED]}
    )
    async with tls_client() as browser, browser.get(url, headers={"Origin": ALLOWED}) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
