"""Stored tunnels: CRUD, list queries, validation and the replicated-data write path."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiohttp

from rportd.app import RportServer
from rportd.store.changes import Document
from rportd.store.database import Transaction
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.tunnels.conftest import ConnectClient


class RecordingSink:
    """A change sink that remembers what was recorded and whether inside a transaction."""

    writable = True

    def __init__(self) -> None:
        self.changes: list[tuple[bool, str, str, Document | None]] = []

    def ensure_writable(self, dataset: str) -> None:
        return None

    async def record(
        self, tx: Transaction | None, dataset: str, key: str, doc: Document | None
    ) -> None:
        self.changes.append((tx is not None, dataset, key, doc))


BASE = "/clients/c1/stored-tunnels"


async def post(api: Api, **body: Any) -> dict[str, Any]:
    status, reply = await api.post(BASE, json=body)
    assert status == 200, reply
    data = reply["data"]
    assert isinstance(data, dict)
    return data


async def test_crud_and_every_write_recorded(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    sink = RecordingSink()
    server.stored_tunnels.changes = sink
    sim = await connect_client(server)
    await sim.stop()  # stored tunnels work for disconnected clients too
    created = await post(
        api,
        name="ssh",
        scheme="ssh",
        remote_ip="10.0.0.5",
        remote_port=22,
        public_port=2222,
        acl="10.0.0.0/8",
        further_options={"idle_timeout_minutes": 7, "nested": [1, 2]},
    )
    assert list(created) == [
        "id",
        "created_at",
        "name",
        "scheme",
        "remote_ip",
        "remote_port",
        "public_port",
        "acl",
        "further_options",
    ]
    assert created["further_options"] == {"idle_timeout_minutes": 7, "nested": [1, 2]}
    assert created["created_at"].endswith("Z")
    tunnel_id = created["id"]
    assert sink.changes[-1][:3] == (True, "stored_tunnels", tunnel_id)
    assert sink.changes[-1][3] is not None and sink.changes[-1][3]["client_id"] == "c1"

    status, body = await api.put(
        f"{BASE}/{tunnel_id}", json={"name": "renamed", "remote_port": 2200}
    )
    assert status == 200
    assert body["data"] == {
        **created,
        "name": "renamed",
        "scheme": None,
        "remote_ip": None,
        "remote_port": 2200,
        "public_port": None,
        "acl": None,
        "further_options": None,
    }
    assert sink.changes[-1][3] is not None and sink.changes[-1][3]["name"] == "renamed"

    status, body = await api.put(f"{BASE}/nope", json={"name": "x"})
    assert (status, body["errors"][0]["title"]) == (404, 'stored tunnel with id "nope" not found')
    assert (await api.delete(f"{BASE}/{tunnel_id}"))[0] == 204
    assert sink.changes[-1] == (True, "stored_tunnels", tunnel_id, None)
    assert (await api.delete(f"{BASE}/{tunnel_id}"))[0] == 204  # idempotent, as upstream
    assert len(sink.changes) == 3
    status, body = await api.get(BASE)
    assert body == {"data": [], "meta": {"count": 0}}


async def test_list_sort_filter_page(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    await connect_client(server)
    await connect_client(server, client_id="c2")
    for i, (name, scheme) in enumerate([("web", "http"), ("db", "ssh"), ("admin", "https")]):
        await post(api, name=name, scheme=scheme, remote_port=8000 + i)
    status, _ = await api.post("/clients/c2/stored-tunnels", json={"name": "other client"})
    assert status == 200

    status, body = await api.get(BASE, params={"sort": "-name"})
    assert [t["name"] for t in body["data"]] == ["web", "db", "admin"]
    assert body["meta"]["count"] == 3
    status, body = await api.get(BASE, params={"filter[scheme]": "http*", "sort": "remote_port"})
    assert [t["name"] for t in body["data"]] == ["web", "admin"]
    status, body = await api.get(BASE, params={"filter[remote_port]": "8001"})
    assert [t["name"] for t in body["data"]] == ["db"]
    status, body = await api.get(BASE, params={"page[limit]": "2", "page[offset]": "2"})
    assert [t["name"] for t in body["data"]] == ["admin"] and body["meta"]["count"] == 3
    status, body = await api.get(BASE, params={"page[limit]": "101"})
    assert (status, body["errors"][0]["title"]) == (
        400,
        "pagination limit too big (101) maximum is 100",
    )
    status, body = await api.get(BASE, params={"sort": "acl"})
    assert (status, body["errors"][0]["title"]) == (400, "unsupported sort field 'acl'")
    status, body = await api.get(BASE, params={"filter[acl]": "x"})
    assert (status, body["errors"][0]["title"]) == (400, "unsupported filter field 'filter[acl]'")


async def test_bad_bodies_change_nothing(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    await connect_client(server)
    for body, detail in [
        ({"name": "x", "bogus": 1}, 'json: unknown field "bogus"'),
        ({"remote_port": "22"}, "json: field 'remote_port' must be an integer or null"),
        ({"scheme": 5}, "json: field 'scheme' must be a string or null"),
    ]:
        status, reply = await api.post(BASE, json=body)
        assert (status, reply["errors"][0]["title"]) == (400, "Invalid JSON data."), body
        assert reply["errors"][0]["detail"] == detail
    status, reply = await api.post(BASE, data=b"")
    assert (status, reply["errors"][0]["title"]) == (400, "Missing body with json data.")
    status, reply = await api.get("/clients/ghost/stored-tunnels")
    assert (status, reply["errors"][0]["title"]) == (404, 'Client with id="ghost" not found.')
    _, reply = await api.get(BASE)
    assert reply["meta"]["count"] == 0


async def test_rows_live_in_clients_db_and_replicate_by_snapshot(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    await connect_client(server)
    created = await post(api, name="kept", remote_port=22)
    db = sqlite3.connect(server.data_dir / "clients.db")
    rows = db.execute("SELECT id, client_id, name, remote_port FROM stored_tunnels").fetchall()
    db.close()
    assert rows == [(created["id"], "c1", "kept", 22)]
    store = server.stored_tunnels
    assert server.replicated["stored_tunnels"] is store
    snapshot = await store.snapshot()
    assert list(snapshot) == [created["id"]]
    await store.restore({})
    assert await store.snapshot() == {}
    await store.apply(created["id"], snapshot[created["id"]])
    _, reply = await api.get(BASE)
    assert reply["data"] == [created]
    await store.apply(created["id"], None)
    assert await store.snapshot() == {}


async def test_client_forgotten_at_disconnect_takes_its_stored_tunnels(
    make_server: ServerFactory, http: aiohttp.ClientSession, connect_client: ConnectClient
) -> None:
    server = await make_server(
        server={"purge_disconnected_clients": True, "keep_disconnected_clients": "0s"}
    )
    api = Api(http, api_base(server), ADMIN)
    sim = await connect_client(server)
    await post(api, name="ssh", remote_port=22)
    await sim.stop()
    status, _ = await api.get("/clients/c1")
    for _ in range(50):
        if status == 404 and await server.stored_tunnels.snapshot() == {}:
            break
        await asyncio.sleep(0.1)
        status, _ = await api.get("/clients/c1")
    assert status == 404
    assert await server.stored_tunnels.snapshot() == {}
