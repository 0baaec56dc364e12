"""The vault through the API on a real server: upstream's codes, messages and shapes."""

from __future__ import annotations

import base64
import json
import sqlite3

import aiohttp

from rportd.app import RportServer
from tests.conftest import ADMIN, Api, ServerFactory, api_base

PASSWORD = "open-sesame"


def title(body: dict[str, list[dict[str, str]]]) -> str:
    return body["errors"][0]["title"]


def titles(body: dict[str, list[dict[str, str]]]) -> list[str]:
    return [e["title"] for e in body["errors"]]


async def test_uninitialized_vault_refuses_everything_but_init(
    server: RportServer, api: Api
) -> None:
    assert await api.get("/vault-admin") == (
        200,
        {"data": {"init": "uninitialized", "status": ""}},
    )
    status, body = await api.get("/vault")
    assert (status, title(body)) == (409, "vault is locked")
    status, body = await api.post("/vault-admin/sesame", json={"password": PASSWORD})
    assert (status, title(body)) == (409, "vault is not initialized yet")
    status, body = await api.delete("/vault-admin/sesame")
    assert (status, title(body)) == (409, "vault is already locked")
    assert not (server.data_dir / "vault.sqlite.db").exists()  # only init creates the file


async def test_init_checks_the_password_and_happens_once(server: RportServer, api: Api) -> None:
    status, body = await api.post("/vault-admin/init", json={"password": "abc"})
    assert (status, title(body)) == (
        400,
        "password is too short, expected length is 4 bytes, provided length is 3 bytes",
    )
    status, body = await api.post("/vault-admin/init", json={"password": "é" * 17})
    assert (status, title(body)) == (
        400,
        "password is too long, expected length is 32 bytes, provided length is 34 bytes",
    )
    status, body = await api.post("/vault-admin/init", json={"password": PASSWORD, "x": 1})
    assert (status, title(body)) == (400, "Invalid JSON data.")
    status, body = await api.post("/vault-admin/init")
    assert (status, title(body)) == (400, "Missing body with json data.")
    assert not (server.data_dir / "vault.sqlite.db").exists()

    assert await api.post("/vault-admin/init", json={"password": PASSWORD}) == (201, None)
    assert await api.get("/vault-admin") == (
        200,
        {"data": {"init": "setup-completed", "status": "unlocked"}},
    )
    status, body = await api.post("/vault-admin/init", json={"password": "other-password"})
    assert (status, title(body)) == (409, "vault is already initialized")
    # The file holds upstream's status row: the check value opens with the password only.
    con = sqlite3.connect(server.data_dir / "vault.sqlite.db")
    (db_status, enc_check), *_ = con.execute("SELECT db_status, enc_check FROM status")
    con.close()
    assert db_status == "setup-completed"
    assert len(base64.b64decode(enc_check)) > 12 + 16


async def test_lock_unlock_and_wrong_password(api: Api) -> None:
    assert (await api.post("/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    status, body = await api.post("/vault-admin/sesame", json={"password": PASSWORD})
    assert (status, title(body)) == (409, "vault is already unlocked")
    assert await api.delete("/vault-admin/sesame") == (204, None)
    assert (await api.get("/vault-admin"))[1]["data"]["status"] == "locked"
    status, body = await api.delete("/vault-admin/sesame")
    assert (status, title(body)) == (409, "vault is already locked")
    status, body = await api.post("/vault", json={"key": "k", "value": "v", "type": "text"})
    assert (status, title(body)) == (409, "vault is locked")

    for wrong in ("wrong-password", ""):
        status, body = await api.post("/vault-admin/sesame", json={"password": wrong})
        assert (status, title(body)) == (401, "wrong password provided")
    assert (await api.get("/vault-admin"))[1]["data"]["status"] == "locked"
    assert await api.post("/vault-admin/sesame", json={"password": PASSWORD}) == (201, None)
    assert (await api.get("/vault-admin"))[1]["data"]["status"] == "unlocked"


async def test_values_lifecycle(server: RportServer, api: Api) -> None:
    assert (await api.post("/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    secret = {
        "client_id": "c1",
        "required_group": "",
        "key": "db-password",
        "value": "hunter2 <&>",
        "type": "secret",
    }
    status, body = await api.post("/vault", json=secret)
    assert (status, body) == (201, {"data": {"id": 1}})
    status, body = await api.post("/vault", json={**secret, "value": "again"})
    assert (status, title(body)) == (409, "another key 'db-password' exists for this client 'c1'")
    status, body = await api.post("/vault", json={**secret, "client_id": "c2"})
    assert (status, body) == (201, {"data": {"id": 2}})
    note = {"key": "readme", "value": "# notes", "type": "markdown"}
    assert (await api.post("/vault", json=note))[1] == {"data": {"id": 3}}

    status, body = await api.get("/vault/1")
    assert status == 200
    item = body["data"]
    assert list(item) == [
        "client_id",
        "required_group",
        "key",
        "value",
        "type",
        "id",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
    ]
    assert (item["value"], item["type"], item["created_by"], item["updated_by"]) == (
        "hunter2 <&>",
        "secret",
        "admin",
        "admin",
    )
    assert item["created_at"].endswith("Z") and item["created_at"] == item["updated_at"]
    # The file never holds the value in clear.
    raw = (server.data_dir / "vault.sqlite.db").read_bytes()
    assert b"hunter2" not in raw

    status, body = await api.get("/vault")
    assert status == 200 and "meta" not in body
    assert [(v["id"], v["client_id"], v["key"]) for v in body["data"]] == [
        (1, "c1", "db-password"),
        (2, "c2", "db-password"),
        (3, "", "readme"),
    ]
    assert set(body["data"][0]) == {"id", "client_id", "created_by", "created_at", "key"}
    status, body = await api.get("/vault", params=[("sort", "-id")])
    assert [v["id"] for v in body["data"]] == [3, 2, 1]
    status, body = await api.get("/vault", params={"filter[client_id]": "c2"})
    assert [v["id"] for v in body["data"]] == [2]
    status, body = await api.get("/vault", params={"filter[key]": "READ*"})
    assert [v["id"] for v in body["data"]] == [3]
    status, body = await api.get("/vault", params={"sort": "value", "filter[type]": "x"})
    assert status == 400
    assert titles(body) == [
        "unsupported sort field 'value'",
        "unsupported filter field 'filter[type]'",
    ]

    # Update: new value and key; the key of another value for the same client is refused.
    status, body = await api.put("/vault/2", json={**secret, "client_id": "c1", "key": "readme"})
    assert status == 200 and body == {"data": {"id": 2}}
    status, body = await api.put("/vault/2", json={**secret, "client_id": "c1"})
    assert (status, title(body)) == (409, "another key 'db-password' exists for this client 'c1'")
    status, body = await api.put("/vault/1", json={**secret, "value": "changed"})
    assert status == 200
    assert (await api.get("/vault/1"))[1]["data"]["value"] == "changed"
    status, body = await api.put("/vault/99", json=secret)
    assert (status, title(body)) == (404, "cannot find entry by the provided existingID")
    # Upstream answers 200 and stores nothing for a negative id; rportd says it is unknown.
    status, body = await api.put("/vault/-1", json=secret)
    assert (status, title(body)) == (404, "cannot find entry by the provided existingID")
    # As upstream, PUT on id 0 creates.
    status, body = await api.put("/vault/0", json={**secret, "key": "via-put"})
    assert (status, body) == (201, {"data": {"id": 4}})
    assert (await api.delete("/vault/4"))[0] == 204

    status, body = await api.get("/vault/99")
    assert (status, title(body)) == (404, "Cannot find a vault value by the provided id: 99")
    status, body = await api.get("/vault/abc")
    assert (status, title(body)) == (
        400,
        "Non-numeric integer value provided: abc for param vault_value_id",
    )
    status, body = await api.get("/vault/0")
    assert (status, title(body)) == (400, 'missing "vault_value_id" route param')

    assert await api.delete("/vault/1") == (204, None)
    status, body = await api.delete("/vault/1")
    assert (status, title(body)) == (404, "Cannot find a vault value by the provided id: 1")
    assert [v["id"] for v in (await api.get("/vault"))[1]["data"]] == [2, 3]

    # Locked again: values stay unreadable until the next unlock.
    assert (await api.delete("/vault-admin/sesame"))[0] == 204
    status, body = await api.get("/vault/2")
    assert (status, title(body)) == (409, "vault is locked")


async def test_value_validation(api: Api) -> None:
    assert (await api.post("/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    status, body = await api.post("/vault", json={})
    assert status == 400
    assert titles(body) == ["key is required", "value is required", "value type is required"]
    status, body = await api.post("/vault", json={"key": "k", "value": "v", "type": "json"})
    assert (status, titles(body)) == (400, ["unknown or invalid value value type json"])
    status, body = await api.post("/vault", json={"key": "k", "value": 5, "type": "text"})
    assert (status, title(body)) == (400, "Invalid JSON data.")
    status, body = await api.post("/vault", json={"key": "k", "value": "v", "kind": "text"})
    assert (status, title(body)) == (400, "Invalid JSON data.")
    assert body["errors"][0]["detail"] == 'json: unknown field "kind"'
    for kind in ("text", "secret", "markdown", "string"):
        status, _ = await api.post("/vault", json={"key": kind, "value": "v", "type": kind})
        assert status == 201, kind


async def test_value_survives_restart_and_needs_unlocking_again(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server("n1")
    api = Api(http, api_base(server), ADMIN)
    assert (await api.post("/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    body = {"key": "token", "value": "s3cr3t", "type": "string"}
    assert (await api.post("/vault", json=body))[0] == 201
    await server.stop()
    server = await make_server("n1")
    api = Api(http, api_base(server), ADMIN)
    assert (await api.get("/vault-admin"))[1]["data"] == {
        "init": "setup-completed",
        "status": "locked",
    }
    status, body = await api.get("/vault/1")
    assert (status, title(body)) == (409, "vault is locked")
    assert (await api.post("/vault-admin/sesame", json={"password": PASSWORD}))[0] == 201
    assert (await api.get("/vault/1"))[1]["data"]["value"] == "s3cr3t"


async def test_audit_entries_never_hold_the_secret(api: Api) -> None:
    assert (await api.post("/vault-admin/init", json={"password": PASSWORD}))[0] == 201
    secret = {"client_id": "c7", "key": "k", "value": "hunter2", "type": "secret"}
    assert (await api.post("/vault", json=secret))[0] == 201
    assert (await api.put("/vault/1", json={**secret, "value": "hunter3"}))[0] == 200
    assert (await api.delete("/vault/1"))[0] == 204
    assert (await api.delete("/vault-admin/sesame"))[0] == 204
    assert (await api.post("/vault-admin/sesame", json={"password": PASSWORD}))[0] == 201
    status, body = await api.get("/auditlog", params={"filter[application]": "vault"})
    assert status == 200
    entries = {e["action"]: e for e in body["data"]}
    assert set(entries) == {"init", "create", "update", "delete", "lock", "unlock"}
    text = json.dumps(body)
    assert "hunter" not in text and PASSWORD not in text
    create = entries["create"]
    assert (create["affected_id"], create["client_id"]) == ("1", "c7")
    assert json.loads(create["request"]) == {
        "client_id": "c7",
        "required_group": "",
        "key": "k",
        "value": "",
        "type": "secret",
    }
    assert (entries["delete"]["affected_id"], entries["delete"]["client_id"]) == ("1", "c7")
