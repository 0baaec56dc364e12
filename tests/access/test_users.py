"""``/users``, ``/user-groups``, ``PUT /me`` and user sessions, for file, DB and static users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt

from rportd.app import RportServer
from tests.access.conftest import (
    ADMIN_PW,
    BOB_PW,
    CAROL_PW,
    api_for,
    db_sections,
    make_users_db,
)
from tests.conftest import ADMIN, Api, ServerFactory
from tests.dbservers import TestDatabase

NEW_PW = "a-brand-new-password-42"
STATIC = (
    "server runs on a static user-password pair, please use JSON file or database for user data"
)


def file_users(server: RportServer) -> dict[str, dict[str, Any]]:
    data = json.loads(Path(server.config.api.auth_file).read_text())
    return {u["username"]: u for u in data}


def check(stored: str, password: str) -> bool:
    assert stored.startswith("$2y$")
    return bcrypt.checkpw(password.encode(), ("$2b$" + stored[4:]).encode())


async def login_token(api: Api, user: str, password: str) -> str:
    status, body = await api.as_user(user, password).get("/login")
    assert status == 200, body
    return str(body["data"]["token"])


async def test_file_users_crud(file_server: RportServer, admin: Api) -> None:
    status, body = await admin.get("/users")
    assert status == 200
    assert body["data"][1] == {
        "username": "bob",
        "password_expired": False,
        "groups": ["Users"],
        "two_fa_send_to": "",
        "effective_user_permissions": None,
        "effective_extended_permissions": {"tunnels_restricted": None, "commands_restricted": None},
        "group_permissions_enabled": False,
    }

    new = {"username": "carol", "password": CAROL_PW, "groups": ["Users", "Ops"]}
    assert await admin.post("/users", json=new) == (201, None)
    stored = file_users(file_server)["carol"]
    assert stored["groups"] == ["Users", "Ops"] and check(stored["password"], CAROL_PW)
    status, _ = await admin.as_user("carol", CAROL_PW).get("/me")
    assert status == 200

    status, body = await admin.post("/users", json=new)
    assert status == 400
    assert body["errors"][0]["title"] == "Another user with this username already exists"

    assert await admin.put("/users/carol", json={"username": "caroline", "groups": []}) == (
        204,
        None,
    )
    users = file_users(file_server)
    assert "carol" not in users and users["caroline"]["groups"] == []
    status, body = await admin.put("/users/carol", json={"groups": ["x"]})
    assert status == 404
    assert body["errors"][0]["title"] == "cannot find user by username 'carol'"
    status, body = await admin.put("/users/caroline", json={})
    assert status == 400 and body["errors"][0]["title"] == "nothing to change"
    status, body = await admin.put("/users/caroline", json={"username": "bob"})
    assert status == 400
    assert body["errors"][0]["title"] == "Another user with this username already exists"

    assert await admin.delete("/users/caroline") == (204, None)
    assert "caroline" not in file_users(file_server)
    status, body = await admin.delete("/users/caroline")
    assert status == 404


async def test_user_validation(admin: Api) -> None:
    status, body = await admin.post("/users", json={})
    assert status == 400
    assert [e["title"] for e in body["errors"]] == ["username is required", "password is required"]
    status, body = await admin.post("/users", json={"username": "dave", "password": "short"})
    assert status == 400
    assert body["errors"][0] == {
        "code": "",
        "title": "Your password is too short",
        "detail": "password must be at least 14 characters",
    }
    status, body = await admin.post("/users", json={"username": "dave", "password": "é" * 37})
    assert status == 400
    assert body["errors"][0] == {
        "code": "",
        "title": "Your password is too long",
        "detail": "password must be at most 72 bytes",
    }
    status, body = await admin.post(
        "/users", json={"username": " dave", "password": "long-enough-password"}
    )
    assert body["errors"][0]["title"] == "username must not start or end with whitespace"
    status, body = await admin.post(
        "/users", json={"username": "dave", "password": "long-enough-password", "admin": True}
    )
    assert status == 400 and body["errors"][0]["title"] == "Invalid JSON data."


async def test_zxcvbn_score(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps([]))
    server = await make_server(
        api={"auth": None, "auth_file": str(users), "password_zxcvbn_minscore": 4}
    )
    # A file with no user yet: add one directly through the account service.
    from rportd.auth.accounts import UserChange

    await server.accounts.create_user(
        UserChange(
            username="admin", password="Tr0ub4dor&3-horse-staple-battery", groups=["Administrators"]
        )
    )
    api = api_for(server, http, "admin", "Tr0ub4dor&3-horse-staple-battery")
    status, body = await api.post(
        "/users", json={"username": "eve", "password": "passwordpassword"}
    )
    assert status == 400
    assert body["errors"][0]["title"] == "Your password is too guessable"
    assert body["errors"][0]["detail"].startswith("zxcvbn score is ")
    status, _ = await api.post(
        "/users", json={"username": "eve", "password": "correct horse battery staple 93!x"}
    )
    assert status == 201


async def test_password_expired_ends_sessions(admin: Api, file_server: RportServer) -> None:
    token = await login_token(admin, "bob", BOB_PW)
    bob_bearer = admin.with_token(token)
    assert (await bob_bearer.get("/me"))[0] == 200
    status, body = await admin.get("/users/bob/sessions")
    assert status == 200 and len(body["data"]) == 1
    assert set(body["data"][0]) == {
        "session_id",
        "expires_at",
        "last_access_at",
        "username",
        "user_agent",
        "ip_address",
    }

    assert (await admin.put("/users/bob", json={"password_expired": True}))[0] == 204
    assert file_users(file_server)["bob"]["password_expired"] is True
    assert (await bob_bearer.get("/me"))[0] == 401
    status, body = await admin.get("/users/bob/sessions")
    assert body["data"] == []
    # Basic auth is refused too; /login asks for a new password.
    status, body = await admin.as_user("bob", BOB_PW).get("/me")
    assert status == 401
    assert body["errors"][0]["title"] == "password has expired, please change your password"
    anonymous = Api(admin.session, admin.base, None)
    status, body = await anonymous.post(
        "/login", json={"username": "bob", "password": BOB_PW, "new_password": NEW_PW}
    )
    assert status == 200, body
    assert file_users(file_server)["bob"].get("password_expired") is not True
    assert (await admin.as_user("bob", NEW_PW).get("/me"))[0] == 200


async def test_sessions_delete(admin: Api) -> None:
    first = await login_token(admin, "bob", BOB_PW)
    second = await login_token(admin, "bob", BOB_PW)
    status, body = await admin.get("/users/bob/sessions")
    ids = [s["session_id"] for s in body["data"]]
    assert len(ids) == 2
    assert await admin.delete(f"/users/bob/sessions/{ids[0]}") == (204, None)
    assert (await admin.with_token(first).get("/me"))[0] == 401
    assert (await admin.with_token(second).get("/me"))[0] == 200
    status, body = await admin.delete("/users/bob/sessions/abc")
    assert status == 400
    assert body["errors"][0]["title"] == 'unable to parse session ID "abc" for user "bob"'
    assert await admin.delete("/users/bob/sessions") == (204, None)
    assert (await admin.with_token(second).get("/me"))[0] == 401


async def test_put_me(admin: Api, file_server: RportServer) -> None:
    bob = admin.as_user("bob", BOB_PW)
    status, body = await bob.put("/me", json={"password": NEW_PW})
    assert status == 403 and body["errors"][0]["title"] == "Missing old password."
    status, body = await bob.put("/me", json={"password": NEW_PW, "old_password": "wrong"})
    assert status == 403 and body["errors"][0]["title"] == "Incorrect old password."
    status, body = await bob.put("/me", json={"password": "short", "old_password": BOB_PW})
    assert status == 400 and body["errors"][0]["title"] == "Your password is too short"
    status, body = await bob.put("/me", json={})
    assert status == 400 and body["errors"][0]["title"] == "nothing to change"
    assert await bob.put("/me", json={"password": NEW_PW, "old_password": BOB_PW}) == (204, None)
    assert check(file_users(file_server)["bob"]["password"], NEW_PW)
    bob = admin.as_user("bob", NEW_PW)
    assert await bob.put("/me", json={"username": "robert"}) == (204, None)
    status, body = await admin.as_user("robert", NEW_PW).get("/me")
    assert status == 200 and body["data"]["username"] == "robert"


async def test_non_admin_refused(bob: Api) -> None:
    for call in (
        bob.get("/users"),
        bob.post("/users", json={"username": "x", "password": "y"}),
        bob.delete("/users/admin"),
        bob.get("/users/admin/sessions"),
        bob.get("/user-groups"),
    ):
        status, body = await call
        assert status == 403
        assert "Administrators" in body["errors"][0]["title"]


async def test_file_source_has_no_user_groups(admin: Api) -> None:
    for call in (
        admin.get("/user-groups"),
        admin.get("/user-groups/Users"),
        admin.put("/user-groups/Users", json={"permissions": {"commands": True}}),
    ):
        status, body = await call
        assert status == 400
        assert body["errors"][0]["title"] == (
            "The json file authentication backend doesn't support this feature."
        )


async def test_static_source_refusals(api: Api) -> None:
    for call in (
        api.get("/users"),
        api.post("/users", json={"username": "x", "password": "y"}),
        api.put("/users/admin", json={"groups": []}),
        api.delete("/users/admin"),
        api.get("/user-groups/Administrators"),
    ):
        status, body = await call
        assert status == 400 and body["errors"][0]["title"] == STATIC
    status, body = await api.get("/user-groups")
    assert status == 400
    assert body["errors"][0]["title"] == (
        "The single user authentication doesn't support this feature."
    )
    status, body = await api.put("/me", json={"username": "root"})
    assert status == 400
    assert body["errors"][0]["title"] == (
        "The single user authentication doesn't support this operation."
    )
    assert ADMIN[0] == "admin"


async def test_db_users_groups_and_permissions(
    external_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    db = await make_users_db(
        external_db,
        [
            ("admin", ADMIN_PW, ["Administrators"]),
            ("bob", BOB_PW, ["Operators"]),
            ("carol", CAROL_PW, ["Viewers"]),
        ],
        {"Operators": {"commands": True, "auditlog": True}, "Viewers": {}},
    )
    server = await make_server(**db_sections(db))
    admin = api_for(server, http, "admin", ADMIN_PW)
    bob = api_for(server, http, "bob", BOB_PW)
    carol = api_for(server, http, "carol", CAROL_PW)

    status, body = await bob.get("/me")
    assert body["data"]["group_permissions_enabled"] is True
    perms = body["data"]["effective_user_permissions"]
    assert perms["commands"] and perms["auditlog"] and not perms["tunnels"]
    assert (await bob.get("/auditlog"))[0] == 200
    status, body = await carol.get("/auditlog")
    assert status == 403
    assert body["errors"][0]["title"] == 'user does not have "auditlog" permission'

    status, body = await admin.get("/user-groups")
    assert [g["name"] for g in body["data"]] == ["Administrators", "Operators", "Viewers"]
    assert body["data"][0]["permissions"] == dict.fromkeys(
        [
            "tunnels",
            "scripts",
            "commands",
            "vault",
            "scheduler",
            "monitoring",
            "uploads",
            "auditlog",
        ],
        True,
    )
    status, body = await admin.put("/user-groups/Viewers", json={"permissions": {"auditlog": True}})
    assert status == 200
    assert body["data"]["name"] == "Viewers" and body["data"]["permissions"]["auditlog"] is True
    assert body["data"]["permissions"]["commands"] is False
    assert (await carol.get("/auditlog"))[0] == 200
    status, body = await admin.put("/user-groups/Viewers", json={"permissions": {"root": True}})
    assert status == 400 and body["errors"][0]["detail"] == "invalid permission: root"
    status, body = await admin.get("/user-groups/Nobody")
    assert status == 200 and not any(body["data"]["permissions"].values())

    new = {"username": "dave", "password": "dave-password-1234", "groups": ["Viewers"]}
    assert (await admin.post("/users", json=new))[0] == 201
    assert (await admin.put("/users/dave", json={"groups": ["Operators", "Viewers"]}))[0] == 204
    status, body = await admin.get("/users")
    assert [u["username"] for u in body["data"]] == ["admin", "bob", "carol", "dave"]
    assert body["data"][3]["groups"] == ["Operators", "Viewers"]

    assert await admin.delete("/user-groups/Viewers") == (204, None)
    assert await db.run("SELECT name FROM group_details ORDER BY name") == [("Operators",)]
    in_viewers = f"SELECT username FROM {db.q('groups')} WHERE {db.q('group')} = ?"
    assert await db.run(in_viewers, ("Viewers",)) == []
    [(hashed,)] = await db.run("SELECT password FROM users WHERE username = 'dave'")
    assert check(hashed, "dave-password-1234")
    [(expired,)] = await db.run("SELECT password_expired FROM users WHERE username = 'dave'")
    assert not expired
    assert (await carol.get("/auditlog"))[0] == 403
