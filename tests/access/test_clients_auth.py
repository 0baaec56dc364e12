"""``/clients-auth``: client credentials in a JSON file, a DB table or the single ``auth``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from rportd.app import RportServer
from tests.access.conftest import (
    ADMIN_PW,
    api_for,
    default_users_file,
    make_users_db,
    sim_config,
    start_sim,
)
from tests.conftest import Api, ServerFactory
from tests.dbservers import TestDatabase
from tests.simulator import RportClientSim


def auth_file_text(server: RportServer) -> str:
    return Path(server.config.server.auth_file).read_text()


def auth_file(server: RportServer) -> dict[str, str]:
    data = json.loads(auth_file_text(server))
    assert isinstance(data, dict)
    return data


async def test_file_credentials_crud(file_server: RportServer, admin: Api) -> None:
    status, body = await admin.get("/clients-auth")
    assert status == 200
    assert body == {"data": [{"id": "client1", "password": "secret-1"}], "meta": {"count": 1}}

    assert await admin.post("/clients-auth", json={"id": "client2", "password": "pw-2"}) == (
        201,
        None,
    )
    assert auth_file(file_server) == {"client1": "secret-1", "client2": "pw-2"}
    raw = auth_file_text(file_server)
    assert '\t"client2": "pw-2"' in raw  # rewritten with tab indentation like upstream

    status, body = await admin.get("/clients-auth/client2")
    assert (status, body) == (200, {"data": {"id": "client2", "password": "pw-2"}})

    status, body = await admin.post("/clients-auth", json={"id": "client2", "password": "other"})
    assert status == 409
    assert body["errors"] == [
        {
            "code": "ERR_CODE_ALREADY_EXIST",
            "title": 'Client Auth with ID "client2" already exist.',
            "detail": "",
        }
    ]

    assert await admin.delete("/clients-auth/client2") == (204, None)
    assert auth_file(file_server) == {"client1": "secret-1"}
    status, body = await admin.get("/clients-auth/client2")
    assert status == 404
    assert body["errors"][0] == {
        "code": "",
        "title": 'Client Auth with ID "client2" not found',
        "detail": "",
    }
    status, body = await admin.delete("/clients-auth/client2")
    assert status == 404
    assert body["errors"][0]["code"] == "ERR_CODE_CLIENT_AUTH_NOT_FOUND"
    assert body["errors"][0]["title"] == 'Client Auth with ID="client2" not found.'


async def test_list_filter_and_pages(admin: Api) -> None:
    for i in range(5):
        status, _ = await admin.post("/clients-auth", json={"id": f"node-{i}", "password": "pw!"})
        assert status == 201
    status, body = await admin.get(
        "/clients-auth", params={"filter[id]": "NODE-*", "page[limit]": "2", "page[offset]": "1"}
    )
    assert status == 200
    assert [c["id"] for c in body["data"]] == ["node-1", "node-2"]
    assert body["meta"]["count"] == 5
    status, body = await admin.get("/clients-auth", params={"sort": "id"})
    assert status == 400 and body["errors"][0]["title"] == "unsupported sort field 'id'"
    status, body = await admin.get("/clients-auth", params={"filter[password]": "x"})
    assert status == 400


async def test_validation_and_refusals(admin: Api, bob: Api) -> None:
    status, body = await admin.post("/clients-auth", json={"id": "ab", "password": "secret"})
    assert status == 400
    assert body["errors"][0] == {
        "code": "ERR_CODE_INVALID_REQUEST",
        "title": "Invalid or missing ID.",
        "detail": "Min size is 3.",
    }
    status, body = await admin.post("/clients-auth", json={"id": "abc", "password": ""})
    assert status == 400 and body["errors"][0]["title"] == "Invalid or missing password."
    status, body = await admin.post("/clients-auth", json={"id": "abc", "pass": "x"})
    assert status == 400 and body["errors"][0]["title"] == "Invalid JSON data."
    status, body = await admin.delete("/clients-auth/client1", params={"force": "maybe"})
    assert status == 400 and body["errors"][0]["title"] == "Invalid force param maybe."

    for call in (bob.get("/clients-auth"), bob.post("/clients-auth", json={"id": "x"})):
        status, body = await call
        assert status == 403
        assert body["errors"][0]["title"] == (
            "current user should belong to Administrators group to access this resource"
        )


async def test_auth_write_false_and_single_auth_are_read_only(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    users = default_users_file(tmp_path / "users.json")
    clients = tmp_path / "clients.json"
    clients.write_text('{"client1": "secret-1"}')
    ro = await make_server(
        "ro",
        server={"auth": None, "auth_file": str(clients), "auth_write": False},
        api={"auth": None, "auth_file": str(users)},
    )
    api = api_for(ro, http, "admin", ADMIN_PW)
    for call in (
        api.post("/clients-auth", json={"id": "client2", "password": "pw-2"}),
        api.delete("/clients-auth/client1"),
    ):
        status, body = await call
        assert status == 405
        assert body["errors"] == [
            {
                "code": "ERR_CODE_CLIENT_AUTH_RO",
                "title": "Client authentication has been attached in read-only mode.",
                "detail": "",
            }
        ]
    status, body = await api.get("/clients-auth")
    assert status == 200 and body["meta"]["count"] == 1
    status, body = await api.get("/status")
    assert body["data"]["clients_auth_mode"] == "Read Only"
    assert json.loads(clients.read_text()) == {"client1": "secret-1"}

    single = await make_server("single")  # [server] auth = "client1:secret-1"
    api = api_for(single, http, "admin", ADMIN_PW)
    status, body = await api.post("/clients-auth", json={"id": "client2", "password": "pw-2"})
    assert status == 405
    assert body["errors"][0]["code"] == "ERR_CODE_CLIENT_AUTH_SINGLE"
    assert body["errors"][0]["title"] == "Client authentication is enabled only for a single user."
    status, body = await api.get("/clients-auth")
    assert body["data"] == [{"id": "client1", "password": "secret-1"}]


async def test_table_credentials(
    external_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    db = await make_users_db(
        external_db,
        [("admin", ADMIN_PW, ["Administrators"])],
        clients_auth={"client1": "secret-1"},
    )
    server = await make_server(
        server={"auth": None, "auth_table": "clients_auth"},
        database=db.section,
    )
    api = api_for(server, http, "admin", ADMIN_PW)
    status, _ = await api.post("/clients-auth", json={"id": "client2", "password": "pw-2"})
    assert status == 201
    status, body = await api.post("/clients-auth", json={"id": "client2", "password": "pw-2"})
    assert status == 409 and body["errors"][0]["code"] == "ERR_CODE_ALREADY_EXIST"
    status, body = await api.get("/clients-auth")
    assert [c["id"] for c in body["data"]] == ["client1", "client2"]
    assert await api.delete("/clients-auth/client1") == (204, None)
    assert await db.run("SELECT id, password FROM clients_auth") == [("client2", "pw-2")]


async def test_new_credential_is_accepted_at_once(
    file_server: RportServer, admin: Api, sims: list[RportClientSim]
) -> None:
    status, _ = await admin.post("/clients-auth", json={"id": "fresh", "password": "fresh-pw"})
    assert status == 201
    sim = await start_sim(sims, sim_config(file_server, "fresh:fresh-pw", "fresh-client"))
    assert sim.registered
    client = file_server.clients.registry.get("fresh-client")
    assert client is not None and client.client_auth_id == "fresh"


async def test_credential_in_use_needs_force(
    file_server: RportServer, admin: Api, sims: list[RportClientSim]
) -> None:
    sim = await start_sim(sims, sim_config(file_server, "client1:secret-1", "c1"))
    status, body = await admin.delete("/clients-auth/client1")
    assert status == 409
    assert body["errors"] == [
        {
            "code": "ERR_CODE_CLIENT_AUTH_HAS_CLIENT",
            "title": "Client Auth expected to have no active or disconnected bound client(s), "
            "got 1.",
            "detail": "",
        }
    ]
    assert auth_file(file_server) == {"client1": "secret-1"}

    status, _ = await admin.delete("/clients-auth/client1", params={"force": "true"})
    assert status == 204
    await sim.wait_disconnected(10)
    assert file_server.clients.registry.get("c1") is None
    assert auth_file(file_server) == {}
    status, body = await admin.get("/clients")
    assert body["meta"]["count"] == 0
    # The client keeps trying, and is refused: its credential is gone.
    await sim.wait_event("auth failed on", 10)
    assert not sim.registered


async def test_auth_file_stays_valid_under_concurrent_posts(
    file_server: RportServer, admin: Api
) -> None:
    async def add(i: int) -> int:
        status, _ = await admin.post("/clients-auth", json={"id": f"id-{i:03d}", "password": "pw!"})
        return status

    statuses = await asyncio.gather(*(add(i) for i in range(60)))
    assert statuses == [201] * 60
    data = auth_file(file_server)
    assert len(data) == 61
    assert all(data[f"id-{i:03d}"] == "pw!" for i in range(60))
    leftovers = [p.name for p in Path(file_server.config.server.auth_file).parent.iterdir()]
    assert not [n for n in leftovers if n.startswith(".clients-auth.json.")]
    _status, body = await admin.get("/clients-auth", params={"page[limit]": "500"})
    assert body["meta"]["count"] == 61
