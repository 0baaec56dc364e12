"""Client groups, client tags and client ACLs: what each user may see and use."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiohttp

from rportd.app import RportServer
from rportd.clients.groups import ClientGroup, normalize_params
from rportd.clients.model import Client
from tests.access.conftest import (
    ADMIN_PW,
    BOB_PW,
    api_for,
    db_sections,
    make_users_db,
    sim_config,
    start_sim,
)
from tests.conftest import Api, ServerFactory
from tests.dbservers import sqlite_database
from tests.simulator import RportClientSim

AUTH = "client1:secret-1"


async def start_three(server: RportServer, sims: list[RportClientSim]) -> list[RportClientSim]:
    specs = [
        ("web-1", "Web One", ["web", "prod"]),
        ("db-1", "Database", ["db", "prod"]),
        ("web-2", "Web Two", ["web"]),
    ]
    return [
        await start_sim(sims, sim_config(server, AUTH, cid, name=name, tags=tags))
        for cid, name, tags in specs
    ]


def group(group_id: str, params: dict[str, object], **extra: object) -> dict[str, object]:
    return {"id": group_id, "description": f"{group_id} group", "params": params, **extra}


async def test_group_crud_and_matching(
    file_server: RportServer, admin: Api, sims: list[RportClientSim]
) -> None:
    running = await start_three(file_server, sims)
    assert await admin.post("/client-groups", json=group("web", {"client_id": ["WEB-*"]})) == (
        201,
        None,
    )
    both = group("prod-web", {"tag": {"and": ["web", "prod"]}})
    assert (await admin.post("/client-groups", json=both))[0] == 201
    anyprod = group("any", {"tag": ["prod", "nothing"], "name": ["*a*"]})
    assert (await admin.post("/client-groups", json=anyprod))[0] == 201
    assert (await admin.post("/client-groups", json=group("empty", {})))[0] == 201

    status, body = await admin.get("/client-groups/web")
    assert status == 200
    data = body["data"]
    assert list(data) == [
        "id",
        "description",
        "params",
        "allowed_user_groups",
        "client_ids",
        "num_clients",
        "num_clients_connected",
    ]
    assert data["client_ids"] == ["web-1", "web-2"]
    assert (data["num_clients"], data["num_clients_connected"]) == (2, 2)
    assert data["params"]["client_id"] == ["WEB-*"] and data["params"]["os"] is None
    assert data["allowed_user_groups"] == []

    status, body = await admin.get("/client-groups/prod-web")
    assert body["data"]["client_ids"] == ["web-1"]
    status, body = await admin.get("/client-groups/any")
    assert body["data"]["client_ids"] == ["db-1"]  # "Database" has an "a", "Web One" has not
    status, body = await admin.get("/client-groups/empty")
    assert body["data"]["client_ids"] is None and body["data"]["num_clients"] == 0

    await running[1].stop()
    await wait_disconnected(file_server, "db-1")
    status, body = await admin.get(
        "/client-groups/any", params={"fields[client_groups]": "id,num_clients_connected"}
    )
    assert body["data"] == {"id": "any", "num_clients_connected": 0}

    status, body = await admin.get("/clients/web-1")
    assert body["data"]["groups"] == ["prod-web", "web"]
    status, body = await admin.get(
        "/clients", params={"filter[groups]": "web", "fields[clients]": "id"}
    )
    assert [c["id"] for c in body["data"]] == ["web-1", "web-2"]

    status, body = await admin.get("/client-groups")
    assert status == 200 and body["meta"]["count"] == 4
    assert body["data"][0] == {"id": "any", "description": "any group"}
    status, body = await admin.get(
        "/client-groups", params={"sort": "-id", "page[limit]": "2", "filter[id]": "*e*"}
    )
    assert [g["id"] for g in body["data"]] == ["web", "prod-web"] and body["meta"]["count"] == 3

    replaced = group("web", {"client_id": ["web-2"]}, allowed_user_groups=["Users"])
    assert await admin.put("/client-groups/web", json=replaced) == (204, None)
    status, body = await admin.get("/client-groups/web")
    assert body["data"]["client_ids"] == ["web-2"]
    assert body["data"]["allowed_user_groups"] == ["Users"]
    assert await admin.delete("/client-groups/web") == (204, None)
    assert (await admin.get("/client-groups/web"))[0] == 404


async def wait_disconnected(server: RportServer, client_id: str) -> None:
    for _ in range(200):
        client = server.clients.registry.get(client_id)
        if client is not None and not client.connected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{client_id} still connected")


async def test_group_refusals(admin: Api, bob: Api) -> None:
    status, body = await admin.post("/client-groups", json=group("bad id!", {}))
    assert status == 400
    assert body["errors"][0] == {
        "code": "",
        "title": "Invalid client group.",
        "detail": 'invalid group ID "bad id!": can contain only "A-Za-z0-9_-*"',
    }
    status, body = await admin.post("/client-groups", json=group("x" * 31, {}))
    assert body["errors"][0]["detail"] == "invalid group ID: max length 30, got 31"
    status, body = await admin.post("/client-groups", json=group("t", {"tag": {"xor": ["a"]}}))
    assert status == 400
    assert body["errors"][0]["detail"] == "error, only and/or is allowed for tags group definitions"
    status, body = await admin.post("/client-groups", json=group("t", {"colour": ["red"]}))
    assert status == 400 and body["errors"][0]["title"] == "Invalid JSON data."
    assert (await admin.post("/client-groups", json=group("dup", {})))[0] == 201
    status, body = await admin.post("/client-groups", json=group("dup", {}))
    assert status == 409 and body["errors"][0]["title"] == "Failed to persist a new client group."
    status, body = await admin.put("/client-groups/dup", json=group("other", {}))
    assert status == 400
    assert body["errors"][0]["title"] == (
        '"group_id" route param doesn\'t not match group ID from request body.'
    )
    status, body = await admin.get("/client-groups/nope")
    assert status == 404 and body["errors"][0]["title"] == 'Client Group[id="nope"] not found.'
    status, body = await bob.post("/client-groups", json=group("mine", {}))
    assert status == 403
    status, body = await bob.delete("/client-groups/dup")
    assert status == 403


async def test_group_acl_grants_clients(
    file_server: RportServer, admin: Api, bob: Api, sims: list[RportClientSim]
) -> None:
    await start_three(file_server, sims)
    status, body = await bob.get("/clients")
    assert body["meta"]["count"] == 0
    status, body = await bob.get("/client-groups")
    assert body["data"] == [] and body["meta"]["count"] == 0
    status, body = await bob.get("/client-tags")
    assert body["data"] == []

    ops = group("ops", {"tag": ["web"]}, allowed_user_groups=["Users"])
    assert (await admin.post("/client-groups", json=ops))[0] == 201
    assert (await admin.post("/client-groups", json=group("all", {"client_id": ["*"]})))[0] == 201
    status, body = await bob.get("/clients", params={"fields[clients]": "id,groups"})
    assert body["data"] == [
        {"id": "web-1", "groups": ["all", "ops"]},
        {"id": "web-2", "groups": ["all", "ops"]},
    ]
    status, body = await bob.get("/clients/db-1")
    assert status == 403
    assert body["errors"][0]["title"] == "Access denied to client(s) with ID(s): db-1"
    status, body = await bob.get(
        "/client-groups", params={"fields[client_groups]": "id,client_ids"}
    )
    assert body["data"] == [
        {"id": "all", "client_ids": ["web-1", "web-2"]},
        {"id": "ops", "client_ids": ["web-1", "web-2"]},
    ]
    status, body = await bob.get("/client-tags")
    assert body == {
        "data": [
            {"tag": "prod", "client_ids": ["web-1"]},
            {"tag": "web", "client_ids": ["web-1", "web-2"]},
        ],
        "meta": {"count": 2},
    }
    status, body = await admin.get(
        "/client-tags", params={"fields[client_tags]": "tag", "page[limit]": "1"}
    )
    assert body == {"data": [{"tag": "db"}], "meta": {"count": 3}}
    # ACLs need user groups the user source knows: the JSON file has none (upstream).
    status, body = await admin.post("/clients/db-1/acl", json={"allowed_user_groups": ["Users"]})
    assert status == 400


async def test_client_acl_with_db_users(
    tmp_path: Path,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    sims: list[RportClientSim],
) -> None:
    db = await make_users_db(
        sqlite_database(tmp_path),
        [("admin", ADMIN_PW, ["Administrators"]), ("bob", BOB_PW, ["Users"])],
        {"Users": {"tunnels": True}},
    )
    server = await make_server(**db_sections(db))
    admin = api_for(server, http, "admin", ADMIN_PW)
    bob = api_for(server, http, "bob", BOB_PW)
    await start_three(server, sims)
    assert (await bob.get("/clients/db-1"))[0] == 403

    status, body = await admin.post("/clients/db-1/acl", json={"allowed_user_groups": ["Ghosts"]})
    assert status == 404 and body["errors"][0]["title"] == "user groups not found: Ghosts"
    status, body = await bob.post("/clients/db-1/acl", json={"allowed_user_groups": ["Users"]})
    assert status == 403
    assert await admin.post("/clients/db-1/acl", json={"allowed_user_groups": ["Users"]}) == (
        204,
        None,
    )
    status, body = await bob.get("/clients/db-1")
    assert status == 200 and body["data"]["allowed_user_groups"] == ["Users"]
    status, body = await bob.get("/clients")
    assert [c["id"] for c in body["data"]] == ["db-1"]
    status, body = await admin.post("/clients/nope/acl", json={"allowed_user_groups": []})
    assert status == 404
    # The ACL is stored with the client.
    assert await stored_acl(server, "db-1") == ["Users"]


def stored_details(server: RportServer, client_id: str) -> dict[str, object]:
    con = sqlite3.connect(server.data_dir / "clients.db")
    row = con.execute("SELECT details FROM clients WHERE id = ?", (client_id,)).fetchone()
    con.close()
    return json.loads(row[0]) if row else {}


async def stored_acl(server: RportServer, client_id: str) -> object:
    """The client's ACL once the registry has written it to ``clients.db``."""
    for _ in range(100):
        acl = stored_details(server, client_id).get("allowed_user_groups")
        if acl:
            return acl
        await asyncio.sleep(0.05)
    return None


def upstream_groups_db(path: Path) -> None:
    """``client_groups.db`` as upstream 0.9.x leaves it (golang-migrate at version 2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE schema_migrations (version uint64, dirty bool);
        CREATE UNIQUE INDEX version_unique ON schema_migrations (version);
        INSERT INTO schema_migrations VALUES (2, 0);
        CREATE TABLE client_groups (
            id TEXT PRIMARY KEY NOT NULL,
            description TEXT NOT NULL,
            params TEXT NOT NULL
        ) WITHOUT ROWID;
        ALTER TABLE client_groups ADD allowed_user_groups TEXT NOT NULL DEFAULT '[]';
        """
    )
    params = {
        "client_id": None,
        "name": None,
        "os": None,
        "os_arch": None,
        "os_family": None,
        "os_kernel": None,
        "hostname": ["SIM-*"],
        "ipv4": None,
        "ipv6": None,
        "tag": {"or": ["web"]},
        "version": None,
        "address": None,
        "client_auth_id": None,
        "connection_state": ["connected"],
    }
    con.execute(
        "INSERT INTO client_groups VALUES (?, ?, ?, ?)",
        ("upstream", "made by upstream", json.dumps(params), '["Users"]'),
    )
    con.execute(
        "INSERT INTO client_groups (id, description, params, allowed_user_groups) "
        "VALUES ('legacy', '', '{\"os\":[\"linux\"]}', 'null')"
    )
    con.commit()
    con.close()


async def test_upstream_client_groups_db_opens_as_is(
    tmp_path: Path,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    sims: list[RportClientSim],
) -> None:
    upstream_groups_db(tmp_path / "node" / "data" / "client_groups.db")
    server = await make_server()
    api = api_for(server, http, "admin", "admin-password-123")
    await start_three(server, sims)
    status, body = await api.get("/client-groups/upstream")
    assert status == 200
    assert body["data"]["client_ids"] == ["web-1", "web-2"]
    assert body["data"]["allowed_user_groups"] == ["Users"]
    assert body["data"]["params"]["tag"] == {"or": ["web"]}
    status, body = await api.get("/client-groups/legacy")
    assert body["data"]["allowed_user_groups"] == []
    assert body["data"]["params"]["os"] == ["linux"]
    con = sqlite3.connect(tmp_path / "node" / "data" / "client_groups.db")
    assert con.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(2, 0)]
    con.close()


def test_params_matching_rules() -> None:
    """Upstream's pattern rules: ``*`` anywhere, case-insensitive, AND across keys."""
    client = Client(
        id="abc-1",
        name="Build Box",
        os_kernel="linux",
        ipv4=["10.0.0.5", "192.168.1.9"],
        tags=["Web", "prod"],
        client_auth_id="client1",
    )
    client.disconnected_at = None

    def matches(params: dict[str, object]) -> bool:
        return ClientGroup("g", params=normalize_params(params)).matches(client)

    assert matches({"client_id": ["ABC-*"]})
    assert matches({"name": ["*box"], "os_kernel": ["LINUX"]})
    assert not matches({"name": ["*box"], "os_kernel": ["windows"]})
    assert matches({"ipv4": ["192.168.*"]})
    assert not matches({"ipv4": []})
    assert matches({"tag": ["web"]}) and matches({"tag": {"and": ["web", "PROD"]}})
    assert not matches({"tag": {"and": ["web", "dev"]}})
    assert matches({"tag": {"or": ["dev", "p*"]}})
    assert matches({"connection_state": ["connected"]})
    assert not matches({})
    assert matches({"client_id": ["a*c*1"]}) and not matches({"client_id": ["a*d"]})
