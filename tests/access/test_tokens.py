"""Personal API tokens: ``/me/tokens``, basic auth with a token, scopes and expiry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import bcrypt

from rportd.app import RportServer
from tests.access.conftest import ADMIN_PW, api_for, default_users_file
from tests.conftest import Api, ServerFactory

SCOPE_DENIED = "the scope of the provided token is not authorized for this operation"


async def create(api: Api, scope: str, name: str, **extra: str) -> dict[str, str]:
    status, body = await api.post("/me/tokens", json={"scope": scope, "name": name, **extra})
    assert status == 200, body
    data = body["data"]
    assert isinstance(data, dict)
    return data


async def test_token_lifecycle(admin: Api, bob: Api) -> None:
    data = await create(bob, "read+write", "ci script")
    assert list(data) == ["prefix", "expires_at", "scope", "token"]
    prefix, token = data["prefix"], data["token"]
    assert len(prefix) == 8 and prefix.isalnum() and token.startswith(prefix + "_")
    assert data["scope"] == "read+write"

    status, body = await bob.get("/me/tokens")
    assert status == 200
    [listed] = body["data"]
    assert listed["prefix"] == prefix and listed["name"] == "ci script"
    assert listed["scope"] == "read+write" and listed["created_at"].endswith("Z")
    assert int(listed["expires_at"][:4]) == int(listed["created_at"][:4]) + 1
    assert "token" not in listed

    with_token = bob.as_user("bob", token)
    status, body = await with_token.get("/me")
    assert status == 200 and body["data"]["username"] == "bob"
    assert (await with_token.put("/me", json={"two_fa_send_to": "x"}))[0] == 400  # allowed
    assert (await bob.as_user("admin", token).get("/me"))[0] == 401  # bound to bob

    status, body = await bob.put(
        f"/me/tokens/{prefix}", json={"name": "renamed", "expires_at": "2099-01-02T03:04:05Z"}
    )
    assert status == 200
    assert body["data"] == {
        "prefix": prefix,
        "name": "renamed",
        "expires_at": "2099-01-02T03:04:05Z",
    }
    status, body = await bob.get("/me/tokens")
    assert body["data"][0]["name"] == "renamed"
    assert body["data"][0]["expires_at"] == "2099-01-02T03:04:05Z"

    status, body = await bob.put("/me/tokens/short", json={"name": "x"})
    assert status == 400 and body["errors"][0]["title"] == "missing or invalid token prefix."
    status, body = await bob.put("/me/tokens/ABCDEFGH", json={"name": "x"})
    assert status == 404
    # Tokens are per user: admin cannot delete bob's token.
    status, body = await admin.delete(f"/me/tokens/{prefix}")
    assert status == 404

    assert await bob.delete(f"/me/tokens/{prefix}") == (204, None)
    assert (await with_token.get("/me"))[0] == 401
    status, body = await bob.get("/me/tokens")
    assert body["data"] == []


async def test_token_refusals(admin: Api, bob: Api) -> None:
    status, body = await bob.post("/me/tokens", json={"scope": "everything", "name": "x"})
    assert status == 400 and body["errors"][0]["title"] == "missing or invalid scope."
    status, body = await bob.post("/me/tokens", json={"scope": "read"})
    assert status == 400
    assert body["errors"][0] == {
        "code": "",
        "title": "missing or invalid name.",
        "detail": "field name is required, 250 characters max",
    }
    status, body = await bob.post("/me/tokens", json={"scope": "read", "name": "n" * 250})
    assert status == 400 and body["errors"][0]["title"] == "missing or invalid name."
    status, body = await bob.post("/me/tokens", json={"scope": "clients-auth", "name": "ca"})
    assert status == 400
    assert body["errors"][0]["title"] == (
        "current user should belong to Administrators group to create a token with this scope"
    )
    status, body = await bob.post("/me/tokens", json={"scope": "read", "name": "x", "y": 1})
    assert status == 400 and body["errors"][0]["title"] == "Invalid JSON data"
    status, body = await bob.post(
        "/me/tokens", json={"scope": "read", "name": "x", "expires_at": "tomorrow"}
    )
    assert status == 400 and body["errors"][0]["title"] == "Invalid JSON data"
    await create(bob, "read", "dup")
    status, body = await bob.post("/me/tokens", json={"scope": "read", "name": "dup"})
    assert status == 400
    assert body["errors"][0]["title"] == "A token with the same name already exists"

    for method in ("get", "post"):
        status, body = await getattr(bob, method)("/me/token")
        assert status == 410
        assert body["errors"][0]["title"] == "use new token management on /me/tokens"
    assert (await bob.put("/me/token/abc"))[0] == 410
    assert (await bob.delete("/me/token/abc"))[0] == 410


async def test_scopes(admin: Api, bob: Api) -> None:
    read = bob.as_user("bob", (await create(bob, "read", "reader"))["token"])
    assert (await read.get("/me/tokens"))[0] == 200
    status, body = await read.post("/me/tokens", json={"scope": "read", "name": "more"})
    assert status == 403 and body["errors"][0]["title"] == SCOPE_DENIED

    clients_auth = admin.as_user("admin", (await create(admin, "clients-auth", "ca"))["token"])
    status, _ = await clients_auth.post("/clients-auth", json={"id": "client9", "password": "pw9"})
    assert status == 201
    assert (await clients_auth.get("/clients-auth"))[0] == 200
    status, body = await clients_auth.get("/me")
    assert status == 403 and body["errors"][0]["title"] == SCOPE_DENIED


async def test_expired_token(bob: Api) -> None:
    data = await create(bob, "read+write", "old", expires_at="2020-01-01T00:00:00Z")
    status, body = await bob.as_user("bob", data["token"]).get("/me")
    assert status == 401 and body["errors"][0]["title"] == "unauthorized"
    status, _ = await bob.put(
        f"/me/tokens/{data['prefix']}", json={"expires_at": "2099-01-01T00:00:00Z"}
    )
    assert status == 200
    assert (await bob.as_user("bob", data["token"]).get("/me"))[0] == 200


async def test_tokens_work_when_passwords_do_not(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """With TOTP on, basic auth with the password stops working; tokens still do."""
    users = default_users_file(tmp_path / "users.json")
    server = await make_server(api={"auth": None, "auth_file": str(users), "totp_enabled": True})
    api = api_for(server, http, "admin", ADMIN_PW)
    status, _body = await api.get("/me")
    assert status == 401
    assert server.api_tokens is not None
    _, clear = await server.api_tokens.create("admin", "script", "read", None)
    assert (await api.as_user("admin", clear).get("/me"))[0] == 200


def upstream_token_db(path: Path, secret: str) -> None:
    """``api_token.db`` as upstream 0.9.x leaves it (golang-migrate at version 3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE schema_migrations (version uint64, dirty bool);
        CREATE UNIQUE INDEX version_unique ON schema_migrations (version);
        INSERT INTO schema_migrations VALUES (3, 0);
        CREATE TABLE IF NOT EXISTS api_tokens (
            username TEXT NOT NULL CHECK (username != ''),
            prefix TEXT NOT NULL CHECK (prefix != ''),
            created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
            expires_at DATETIME,
            scope TEXT,
            token TEXT NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (username, prefix)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_unique_name ON api_tokens (username, name);
        """
    )
    hashed = "$2y$" + bcrypt.hashpw(secret.encode(), bcrypt.gensalt(10)).decode()[4:]
    con.execute(
        "INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            "admin",
            "Ab3dEf7h",
            "2024-05-01 10:00:00+02:00",
            "2099-05-01 10:00:00.123456789+00:00",
            "read",
            hashed,
            "from upstream",
        ),
    )
    con.execute(
        "INSERT INTO api_tokens (username, prefix, token, name) VALUES (?, ?, ?, ?)",
        ("admin", "Zz9yXx8w", hashed, "no expiry"),
    )
    con.commit()
    con.close()


async def test_upstream_token_db_opens_as_is(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    secret = "5a0b3c16-0a8d-4e45-a5e5-3c9ab1b4a8a0"
    upstream_token_db(tmp_path / "node" / "data" / "api_token.db", secret)
    server: RportServer = await make_server()
    api = api_for(server, http, "admin", "admin-password-123")
    status, body = await api.get("/me/tokens")
    assert status == 200
    by_prefix = {t["prefix"]: t for t in body["data"]}
    assert by_prefix["Ab3dEf7h"] == {
        "prefix": "Ab3dEf7h",
        "name": "from upstream",
        "created_at": "2024-05-01T10:00:00+02:00",
        "expires_at": "2099-05-01T10:00:00.123456Z",
        "scope": "read",
    }
    assert by_prefix["Zz9yXx8w"]["expires_at"] is None
    assert (await api.as_user("admin", f"Ab3dEf7h_{secret}").get("/me"))[0] == 200
    # A row without scope is valid but usable for nothing (as upstream).
    status, body = await api.as_user("admin", f"Zz9yXx8w_{secret}").get("/status")
    assert status == 403 and body["errors"][0]["title"] == SCOPE_DENIED
    assert (await api.as_user("admin", f"Ab3dEf7h_{secret}x").get("/me"))[0] == 401
    # And our writes stay readable by upstream: same table, $2y$ hashes.
    await create(api, "read", "ours")
    con = sqlite3.connect(tmp_path / "node" / "data" / "api_token.db")
    rows = con.execute("SELECT token, created_at FROM api_tokens WHERE name = 'ours'").fetchall()
    version = con.execute("SELECT version, dirty FROM schema_migrations").fetchall()
    con.close()
    assert rows[0][0].startswith("$2y$10$")
    assert rows[0][1].endswith("+00:00")
    assert version == [(3, 0)]
