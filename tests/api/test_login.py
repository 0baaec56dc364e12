"""Logging in to the API: basic auth, bearer tokens and sessions, for each user source."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt

from rportd.app import RportServer
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.dbservers import TestDatabase


def y_hash(password: str) -> str:
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()[4:]


async def login(api: Api, username: str, password: str, **params: str) -> tuple[int, Any]:
    return await api.as_user(username, password).get("/login", params=params)


async def token_for(api: Api, username: str = ADMIN[0], password: str = ADMIN[1]) -> str:
    status, body = await login(api, username, password)
    assert status == 200, body
    assert isinstance(body, dict) and body["data"]["two_fa"] is None
    return str(body["data"]["token"])


async def test_basic_and_bearer_auth(api: Api) -> None:
    status, body = await api.get("/me")
    assert status == 200
    assert body["data"]["username"] == "admin"
    assert body["data"]["groups"] == ["Administrators"]
    assert all(body["data"]["effective_user_permissions"].values())

    token = await token_for(api)
    status, body = await api.with_token(token).get("/me")
    assert status == 200 and body["data"]["username"] == "admin"
    status, body = await api.with_token(token + "x").get("/me")
    assert status == 401
    assert body == {"errors": [{"code": "", "title": "unauthorized", "detail": ""}]}


async def test_post_login_json_and_form(api: Api) -> None:
    creds = {"username": ADMIN[0], "password": ADMIN[1]}
    anonymous = Api(api.session, api.base, None)
    status, body = await anonymous.post("/login", json=creds)
    assert status == 200 and body["data"]["token"]
    status, body = await anonymous.post("/login", data=creds)
    assert status == 200 and body["data"]["token"]
    status, body = await anonymous.post(
        "/login",
        data=json.dumps(creds),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 400
    assert body["errors"][0]["title"] == "unsupported content type: application/json; charset=utf-8"
    status, body = await anonymous.post("/login", json={**creds, "extra": 1})
    assert status == 400 and body["errors"][0]["title"] == "Invalid JSON data."
    status, body = await anonymous.post("/login", json={"username": "", "password": "x"})
    assert status == 401 and body["errors"][0]["title"] == "username is required"


async def test_login_refusals(api: Api) -> None:
    status, body = await login(api, ADMIN[0], "wrong")
    assert status == 401 and body["errors"][0]["title"] == "unauthorized"
    anonymous = Api(api.session, api.base, None)
    status, body = await anonymous.get("/login")
    assert status == 401 and body["errors"][0]["title"] == "auth is required"
    status, body = await login(api, *ADMIN, **{"token-lifetime": "abc"})
    assert status == 400
    assert body["errors"][0]["title"].startswith("invalid token-lifetime")
    status, body = await login(api, *ADMIN, **{"token-lifetime": str(91 * 86400)})
    assert status == 400
    assert body["errors"][0]["title"] == "requested token lifetime exceeds max allowed 7776000"


async def test_logout_ends_the_session(api: Api) -> None:
    token = await token_for(api)
    bearer = api.with_token(token)
    assert (await bearer.delete("/logout"))[0] == 204
    assert (await bearer.get("/me"))[0] == 401
    assert (await bearer.delete("/logout"))[0] == 401


async def test_sessions_survive_a_restart(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    token = await token_for(Api(http, api_base(server), ADMIN))
    assert server.sessions is not None
    await server.stop()
    again = await make_server()
    status, body = await Api(http, api_base(again), None).with_token(token).get("/me")
    assert status == 200 and body["data"]["username"] == "admin"


async def test_unauthenticated_and_unknown_routes(api: Api) -> None:
    anonymous = Api(api.session, api.base, None)
    status, body = await anonymous.get("/status")
    assert status == 401
    assert body == {"errors": [{"code": "", "title": "unauthorized", "detail": ""}]}
    assert await api.get("/no-such-route") == (404, "404 page not found")
    assert await api.put("/status") == (405, None)
    status, body = await anonymous.get("/auth/provider")
    assert status == 200 and body["data"]["auth_provider"] == "built-in"


async def test_oversized_body_is_refused(api: Api) -> None:
    status, body = await api.post(
        "/login", data="x" * 20000, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert isinstance(body, str) and body.startswith(
        "Request data exceeds the limit of 10240 bytes"
    )


async def test_login_wait_and_ip_ban(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"user_login_wait": 1, "max_failed_login": 3, "ban_time": 60})
    api = Api(http, api_base(server), ADMIN)
    assert (await login(api, "admin", "wrong"))[0] == 401
    status, body = await login(api, *ADMIN)
    assert status == 429 and body["errors"][0]["title"] == "too many requests, please try later"
    await asyncio.sleep(1.1)
    assert (await login(api, *ADMIN))[0] == 200
    for name in ("x1", "x2", "x3"):
        await login(api, name, "wrong")
    status, body = await api.get("/status")
    assert (status, body) == (423, "Too many bad attempts. Please try later.")


async def test_users_from_auth_file(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    users = tmp_path / "api-auth.json"
    users.write_text(
        json.dumps(
            [
                {
                    "username": "alice",
                    "password": y_hash("alice-password-1"),
                    "groups": ["Administrators"],
                },
                {"username": "bob", "password": y_hash("bob-password-12"), "groups": ["operators"]},
                {
                    "username": "carol",
                    "password": y_hash("carol-password-1"),
                    "groups": [],
                    "password_expired": True,
                },
            ]
        )
    )
    server = await make_server(api={"auth": None, "auth_file": str(users)})
    api = Api(http, api_base(server), None)
    status, body = await api.as_user("bob", "bob-password-12").get("/me")
    assert status == 200 and body["data"]["groups"] == ["operators"]
    # Without group details, every user has every function permission.
    assert all(body["data"]["effective_user_permissions"].values())
    assert (await api.as_user("alice", "wrong").get("/me"))[0] == 401

    status, body = await login(api, "carol", "carol-password-1")
    assert status == 401
    assert body["errors"][0]["title"] == "password has expired, please change your password"
    status, body = await api.post(
        "/login",
        json={"username": "carol", "password": "carol-password-1", "new_password": "short"},
    )
    assert status == 400 and body["errors"][0]["title"] == "Your password is too short"
    status, body = await api.post(
        "/login",
        json={
            "username": "carol",
            "password": "carol-password-1",
            "new_password": "a-much-longer-secret",
        },
    )
    assert status == 200 and body["data"]["token"]
    stored = {u["username"]: u for u in json.loads(users.read_text())}
    assert stored["carol"]["password"].startswith("$2y$")
    assert "password_expired" not in stored["carol"]
    assert (await login(api, "carol", "a-much-longer-secret"))[0] == 200


async def test_auth_file_with_non_bcrypt_password_stops_the_server(
    tmp_path: Path, make_server: ServerFactory
) -> None:
    from rportd.app import StartupError

    users = tmp_path / "api-auth.json"
    users.write_text(json.dumps([{"username": "alice", "password": "plain", "groups": []}]))
    try:
        await make_server(api={"auth": None, "auth_file": str(users)})
    except StartupError as exc:
        assert "must be a bcrypt hash starting with $2y$" in str(exc)
    else:
        raise AssertionError("server started with a plain-text password in the user file")


async def test_users_from_db_tables(
    external_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    db = external_db
    await db.create_tables()
    users, groups = db.q("users"), db.q("groups")
    await db.run(
        f"INSERT INTO {users} (username, password) VALUES (?, ?)",
        ("root", y_hash("root-password-1")),
    )
    await db.run(
        f"INSERT INTO {users} (username, password) VALUES (?, ?)", ("ops", "plain-text-pass")
    )
    for member in (("root", "Administrators"), ("ops", "operators"), ("ops", "viewers")):
        await db.run(f"INSERT INTO {groups} VALUES (?, ?)", member)
    await db.run("""INSERT INTO group_details VALUES ('operators', '{"commands": true}')""")
    await db.run("""INSERT INTO group_details VALUES ('viewers', '{"monitoring": true}')""")
    server = await make_server(
        api={
            "auth": None,
            "auth_user_table": "users",
            "auth_group_table": "groups",
            "auth_group_details_table": "group_details",
        },
        database=db.section,
    )
    api = Api(http, api_base(server), None)
    status, body = await api.as_user("ops", "plain-text-pass").get("/me")
    assert status == 200
    perms = body["data"]["effective_user_permissions"]
    assert perms["commands"] and perms["monitoring"]
    assert not perms["tunnels"] and not perms["vault"]
    assert body["data"]["group_permissions_enabled"] is True
    status, body = await api.as_user("root", "root-password-1").get("/me")
    assert status == 200 and all(body["data"]["effective_user_permissions"].values())
    status, body = await api.as_user("root", "root-password-1").get("/status")
    assert body["data"]["users_auth_source"] == "DB"
    assert body["data"]["group_permissions_enabled"] is True


async def test_bearer_requests_do_not_write_sessions_each_time(
    server: RportServer, api: Api
) -> None:
    token = await token_for(api)
    bearer = api.with_token(token)
    assert server.sessions is not None
    await server.sessions.flush()
    before = await server.sessions.db.fetch_all("SELECT last_access_at FROM api_sessions")
    for _ in range(5):
        assert (await bearer.get("/me"))[0] == 200
    after = await server.sessions.db.fetch_all("SELECT last_access_at FROM api_sessions")
    assert before == after  # written by the next flush, not per request
    await server.sessions.flush()
    flushed = await server.sessions.db.fetch_all("SELECT last_access_at FROM api_sessions")
    assert flushed != before
