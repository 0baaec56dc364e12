"""The vault replicates to a secondary encrypted; each node is unlocked on its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rportd.app import RportServer
from tests.ha.test_replication import Pair, eventually

PASSWORD = "cluster-vault-pw"
SECRET = "replicated-s3cret"
BASIC = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-password-123")}


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    pair = Pair(tmp_path)
    yield pair
    for server in reversed(pair.running):
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, base: str, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{base}/api/v1{path}", headers=BASIC, **kw) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def standby(server: RportServer) -> bool:
    return server.ha is not None and server.ha.state == "standby"


async def test_secondary_unlocks_with_the_same_password_and_refuses_writes(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: standby(secondary))
    p, s = pair.primary_url, pair.secondary_url
    assert (await call(http, s, "GET", "/vault-admin"))[1]["data"]["init"] == "uninitialized"
    assert not (secondary.data_dir / "vault.sqlite.db").exists()

    assert (await call(http, p, "POST", "/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    value = {"client_id": "web01", "key": "db", "value": SECRET, "type": "secret"}
    status, body = await call(http, p, "POST", "/vault", json=value)
    assert (status, body) == (201, {"data": {"id": 1}})
    status, _ = await call(http, p, "PUT", "/vault/1", json={**value, "value": SECRET + "!"})
    assert status == 200

    async def initialized_there() -> bool:
        _, body = await call(http, s, "GET", "/vault-admin")
        return bool(body["data"] == {"init": "setup-completed", "status": "locked"})

    await eventually(initialized_there)
    # Locked on the secondary until unlocked there; the password is the primary's.
    status, body = await call(http, s, "GET", "/vault/1")
    assert (status, body["errors"][0]["title"]) == (409, "vault is locked")
    status, body = await call(http, s, "POST", "/vault-admin/sesame", json={"password": "nope"})
    assert (status, body["errors"][0]["title"]) == (401, "wrong password provided")
    assert await call(http, s, "POST", "/vault-admin/sesame", json={"password": PASSWORD}) == (
        201,
        None,
    )

    async def updated_there() -> bool:
        status, body = await call(http, s, "GET", "/vault/1")
        return status == 200 and body["data"]["value"] == SECRET + "!"

    await eventually(updated_there)
    status, body = await call(http, s, "GET", "/vault")
    assert [(v["id"], v["client_id"], v["key"]) for v in body["data"]] == [(1, "web01", "db")]

    # Writes are the primary's; unlocking and locking are each node's own.
    for method, path in (
        ("POST", "/vault"),
        ("PUT", "/vault/1"),
        ("DELETE", "/vault/1"),
        ("POST", "/vault-admin/init"),
    ):
        body_json = {"password": PASSWORD} if path.endswith("init") else value
        status, body = await call(http, s, method, path, json=body_json)
        assert status == 403, (method, path, body)
        assert "secondary" in body["errors"][0]["title"]
    assert (await call(http, p, "DELETE", "/vault-admin/sesame"))[0] == 204
    assert (await call(http, s, "GET", "/vault/1"))[0] == 200  # still unlocked here
    assert (await call(http, s, "DELETE", "/vault-admin/sesame"))[0] == 204
    assert (await call(http, s, "GET", "/vault-admin"))[1]["data"]["status"] == "locked"

    # Neither the replicated documents nor the secondary's file hold the value in clear.
    assert primary.ha is not None
    logged = json.dumps([c.to_json() for c in await primary.ha.changelog.read(0)])
    assert '"vault"' in logged and '"vault_status"' in logged
    assert SECRET not in logged and PASSWORD not in logged
    assert SECRET.encode() not in (secondary.data_dir / "vault.sqlite.db").read_bytes()

    # A deletion reaches the secondary too.
    assert (await call(http, p, "POST", "/vault-admin/sesame", json={"password": PASSWORD}))[
        0
    ] == 201
    assert (await call(http, p, "DELETE", "/vault/1"))[0] == 204
    assert (await call(http, s, "POST", "/vault-admin/sesame", json={"password": PASSWORD}))[
        0
    ] == 201

    async def gone_there() -> bool:
        return (await call(http, s, "GET", "/vault/1"))[0] == 404

    await eventually(gone_there)


async def test_a_late_secondary_gets_the_vault_by_snapshot(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    primary = await pair.start("p", "primary")
    p, s = pair.primary_url, pair.secondary_url
    assert (await call(http, p, "POST", "/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    for i in range(3):
        value = {"key": f"k{i}", "value": f"{SECRET}-{i}", "type": "text"}
        assert (await call(http, p, "POST", "/vault", json=value))[0] == 201
    assert (await call(http, p, "DELETE", "/vault/2"))[0] == 204
    assert primary.ha is not None
    await primary.ha.changelog.truncate(keep=1)  # the vault's creation is no longer in the log

    secondary = await pair.start("s", "secondary")
    await eventually(lambda: standby(secondary))

    async def unlocked_there() -> bool:
        status, _ = await call(http, s, "POST", "/vault-admin/sesame", json={"password": PASSWORD})
        return status == 201

    await eventually(unlocked_there)
    _, body = await call(http, s, "GET", "/vault")
    assert [v["key"] for v in body["data"]] == ["k0", "k2"]
    assert (await call(http, s, "GET", "/vault/3"))[1]["data"]["value"] == f"{SECRET}-2"
