"""Failed logins: a wait per username (429) and a ban per IP (423, plain text)."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import ADMIN, Api, ServerFactory, api_base

TOO_MANY = "too many requests, please try later"
BANNED = "Too many bad attempts. Please try later."


async def test_user_login_wait(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await make_server(api={"user_login_wait": 1.0, "max_failed_login": 0})
    api = Api(http, api_base(server), ADMIN)
    wrong = api.as_user(ADMIN[0], "wrong-password")
    status, body = await wrong.get("/me")
    assert status == 401 and body["errors"][0]["title"] == "unauthorized"
    # Even the right password waits while the name is on the wait list...
    status, body = await api.get("/me")
    assert status == 429 and body["errors"][0]["title"] == TOO_MANY
    status, body = await api.get("/login")
    assert status == 429 and body["errors"][0]["title"] == TOO_MANY
    # ...other names are not affected...
    status, _ = await api.as_user("someone", "x").get("/me")
    assert status == 401
    # ...and the wait ends.
    await asyncio.sleep(1.1)
    assert (await api.get("/me"))[0] == 200


async def test_ip_ban(make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = await make_server(api={"max_failed_login": 3, "ban_time": 1})
    api = Api(http, api_base(server), ADMIN)
    for name in ("a", "b", "c"):  # different names: the per-user wait does not interfere
        status, _ = await api.as_user(name, "nope").get("/me")
        assert status == 401
    async with http.get(api_base(server) + "/status") as resp:
        assert resp.status == 423
        assert resp.content_type == "text/plain"
        assert await resp.text() == BANNED
    assert (await api.get("/me"))[0] == 423  # right credentials too
    await asyncio.sleep(1.1)
    assert (await api.get("/me"))[0] == 200


async def test_success_resets_failures(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"max_failed_login": 3, "ban_time": 60})
    api = Api(http, api_base(server), ADMIN)
    for _ in range(10):
        assert (await api.as_user("x", "nope").get("/me"))[0] == 401
        assert (await api.as_user("y", "nope").get("/me"))[0] == 401
        assert (await api.get("/me"))[0] == 200
