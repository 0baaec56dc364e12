"""``[api] cors``: preflights and CORS headers as upstream's rs/cors answers them."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from rportd.app import RportServer
from tests.browser import headless_browser
from tests.conftest import ADMIN, ServerFactory
from tests.webui.test_doc_root import SITE, web_base

ALLOWED = "http://ui.example.com:8000"
BASIC = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}


async def preflight(
    http: aiohttp.ClientSession, server: RportServer, origin: str, **headers: str
) -> aiohttp.ClientResponse:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": "GET", **headers}
    async with http.options(web_base(server) + "/api/v1/clients", headers=request_headers) as r:
        await r.read()
        return r


async def test_preflight_for_allowed_and_refused_origins(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"cors": [ALLOWED, "https://*.example.org"]})

    resp = await preflight(
        http, server, ALLOWED, **{"Access-Control-Request-Headers": "authorization,content-type"}
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert resp.headers["Access-Control-Allow-Methods"] == "GET"
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers.getall("Vary") == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]
    # Origins compare case-insensitively; one wildcard matches any run of characters.
    resp = await preflight(http, server, "https://ui.EXAMPLE.org")
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.EXAMPLE.org"

    refused: list[tuple[str, dict[str, str]]] = [
        ("http://evil.example.net", {}),
        ("http://ui.example.com", {}),  # another port is another origin
        (ALLOWED, {"Access-Control-Request-Method": "PATCH"}),
        (ALLOWED, {"Access-Control-Request-Headers": "X-Secret"}),
    ]
    for origin, extra in refused:
        resp = await preflight(http, server, origin, **extra)
        assert resp.status == 204, (origin, extra)
        assert "Access-Control-Allow-Origin" not in resp.headers, (origin, extra)
        assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_actual_requests_carry_the_headers(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"cors": [ALLOWED]})
    url = web_base(server) + "/api/v1/status"
    async with http.get(url, headers={"Origin": ALLOWED, **BASIC}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert resp.headers["Vary"] == "Origin"
    # Errors too, so that the UI can read them.
    async with http.get(url, headers={"Origin": ALLOWED}) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    async with http.get(url, headers={"Origin": "http://evil.example.net", **BASIC}) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert resp.headers["Vary"] == "Origin"


async def test_star_allows_every_origin_with_credentials(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"cors": ["*"]})
    resp = await preflight(http, server, "http://anything.test:1234")
    # With credentials allowed, the origin is echoed, never "*".
    assert resp.headers["Access-Control-Allow-Origin"] == "http://anything.test:1234"


async def test_without_cors_no_headers(
    make_server: ServerFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "rportd.cors")
    for cors in ([], ["example.com", "https://a.example.com/path"]):
        server = await make_server(name=f"n{len(cors)}", api={"cors": cors})
        resp = await preflight(http, server, ALLOWED)
        assert resp.status == 405
        assert "Access-Control-Allow-Origin" not in resp.headers
    # Invalid entries are dropped with an error naming them (upstream's rule).
    assert "invalid cors origin 'example.com': invalid scheme" in caplog.text
    assert "'https://a.example.com/path': must not have a path" in caplog.text


async def test_browser_cross_origin_calls(make_server: ServerFactory) -> None:
    """A page on one origin calls the API on another: allowed, then refused, by the browser."""
    server = await make_server(api={"doc_root": str(SITE), "cors": ["http://127.0.0.1:*"]})
    assert server.api_address is not None
    port = server.api_address[1]
    script = """async ([api, user, password]) => {
        try {
            const login = await fetch(api + "/api/v1/login", {
                method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({username: user, password: password}),
            });
            const token = (await login.json()).data.token;
            const me = await fetch(api + "/api/v1/me", {
                headers: {Authorization: "Bearer " + token},
            });
            return (await me.json()).data.username;
        } catch (error) {
            return "refused: " + error.name;
        }
    }"""
    async with headless_browser() as browser:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        result: Any = await page.evaluate(script, [f"http://localhost:{port}", *ADMIN])
        assert result == ADMIN[0]
        await page.goto(f"http://localhost:{port}/")
        result = await page.evaluate(script, [f"http://127.0.0.1:{port}", *ADMIN])
        assert result == "refused: TypeError"
