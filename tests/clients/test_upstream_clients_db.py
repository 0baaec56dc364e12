"""An upstream-created clients.db opens as is, and the API lists its clients as api.md says."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN, Api, ServerFactory, api_base

# The schema upstream's golang-migrate leaves in clients.db (storage.md §1), version 3.
UPSTREAM_SCHEMA = """
CREATE TABLE schema_migrations (version uint64,dirty bool);
CREATE UNIQUE INDEX version_unique ON schema_migrations (version);
CREATE TABLE clients (
    id TEXT PRIMARY KEY NOT NULL,
    client_auth_id TEXT NOT NULL,
    disconnected_at DATETIME,
    details TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_disconnected_client ON clients (disconnected_at DESC, client_auth_id);
CREATE INDEX idx_disconnected_time_client
    ON clients (DATETIME(disconnected_at) DESC, client_auth_id);
CREATE TABLE stored_tunnels (
    id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    created_at DATETIME, name TEXT, scheme TEXT, remote_ip TEXT, remote_port NUMBER, acl TEXT,
    public_port NUMBER, further_options TEXT
);
INSERT INTO schema_migrations VALUES (3, 0);
"""


def details(name: str, os_kernel: str, tags: list[str], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "num_cpus": 2,
        "mem_total": 4096,
        "name": name,
        "os": f"{os_kernel} box",
        "os_arch": "amd64",
        "os_family": "debian" if os_kernel == "linux" else "Standalone Workstation",
        "os_kernel": os_kernel,
        "os_full_name": "Debian 12" if os_kernel == "linux" else "Windows 11",
        "os_version": "12",
        "os_virtualization_system": "KVM",
        "os_virtualization_role": "guest",
        "cpu_family": "6",
        "cpu_model": "85",
        "cpu_model_name": "Xeon",
        "cpu_vendor": "GenuineIntel",
        "timezone": "UTC (UTC+00:00)",
        "hostname": f"{name}.example.com",
        "version": "0.9.12",
        "address": "198.51.100.7",
        "ipv4": ["10.0.0.5"],
        "ipv6": None,
        "tags": tags,
        "labels": {"city": "Paris"} if name == "web01" else None,
        "tunnels": [
            {
                "name": "",
                "protocol": "tcp",
                "lhost": "0.0.0.0",
                "lport": "22000",
                "lport_random": True,
                "owner": "admin",
                "rhost": "127.0.0.1",
                "rport": "22",
                "scheme": "ssh",
                "acl": None,
                "idle_timeout_minutes": 5,
                "auto_close": 0,
                "http_proxy": False,
                "host_header": "",
                "auth_user": "",
                "auth_password": "",
                "tunnel_url": "",
                "id": "1",
                "created_at": "2024-05-01T10:00:00.123456789Z",
            }
        ]
        if name == "web01"
        else [],
        "allowed_user_groups": None,
        "updates_status": None,
        "ext_ip_addresses": None,
        "client_configuration": None,
    }
    base.update(extra)
    return base


def make_upstream_clients_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(UPSTREAM_SCHEMA)
    rows = [
        (
            "web01",
            "client1",
            "2024-05-01 10:00:00.123456789+00:00",
            details("web01", "linux", ["web", "prod"]),
        ),
        ("db01", "client1", "2024-05-02 11:30:00+00:00", details("db01", "linux", ["db", "prod"])),
        ("win01", "client2", None, details("win01", "windows", ["desktop"])),
        ("alpha", "client3", "2024-04-30 08:00:00+00:00", details("alpha", "linux", [])),
    ]
    db.executemany(
        "INSERT INTO clients VALUES (?, ?, ?, ?)",
        [(i, a, d, json.dumps(det)) for i, a, d, det in rows],
    )
    db.commit()
    db.close()


@pytest.fixture
async def upstream_api(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> Api:
    make_upstream_clients_db(tmp_path / "node" / "data" / "clients.db")
    server = await make_server()
    return Api(http, api_base(server), ADMIN)


async def test_upstream_clients_are_listed(upstream_api: Api) -> None:
    status, body = await upstream_api.get("/clients")
    assert status == 200
    assert body["meta"]["count"] == 4
    assert [c["id"] for c in body["data"]] == ["alpha", "db01", "web01", "win01"]
    # Default fieldset is id, name, hostname.
    assert body["data"][2] == {"id": "web01", "name": "web01", "hostname": "web01.example.com"}


async def test_stored_connected_client_is_disconnected_at_start(upstream_api: Api) -> None:
    status, body = await upstream_api.get("/clients/win01")
    assert status == 200
    client = body["data"]
    assert client["connection_state"] == "disconnected"
    assert client["disconnected_at"] is not None


async def test_full_client_object_keeps_upstream_details(upstream_api: Api) -> None:
    status, body = await upstream_api.get("/clients/web01")
    assert status == 200
    client = body["data"]
    assert client["disconnected_at"] == "2024-05-01T10:00:00.123456Z"
    assert client["labels"] == {"city": "Paris"}
    assert client["tags"] == ["web", "prod"]
    assert client["tunnels"][0]["lport"] == "22000"
    assert client["tunnels"][0]["created_at"] == "2024-05-01T10:00:00.123456789Z"
    assert client["client_auth_id"] == "client1"
    assert client["groups"] == []
    for key in ("os_full_name", "mem_total", "num_cpus", "ext_ip_addresses", "updates_status"):
        assert key in client


async def test_filter_sort_paginate_and_fields(upstream_api: Api) -> None:
    status, body = await upstream_api.get(
        "/clients", params={"filter[tags]": "prod", "sort": "-name", "fields[clients]": "id,tags"}
    )
    assert status == 200
    assert body["data"] == [
        {"id": "web01", "tags": ["web", "prod"]},
        {"id": "db01", "tags": ["db", "prod"]},
    ]

    status, body = await upstream_api.get(
        "/clients",
        params={"filter[os_kernel]": "windows,LINUX", "page[limit]": "2", "page[offset]": "1"},
    )
    assert body["meta"]["count"] == 4
    assert [c["id"] for c in body["data"]] == ["db01", "web01"]

    status, body = await upstream_api.get("/clients", params={"filter[hostname]": "*01.example*"})
    assert [c["id"] for c in body["data"]] == ["db01", "web01", "win01"]

    status, body = await upstream_api.get("/clients", params={"filter[tags]": "and(web,prod)"})
    assert [c["id"] for c in body["data"]] == ["web01"]

    status, body = await upstream_api.get("/clients", params={"filter[labels]": "city: paris"})
    assert [c["id"] for c in body["data"]] == ["web01"]

    status, body = await upstream_api.get(
        "/clients",
        params={"filter[connection_state]": "disconnected", "filter[client_auth_id]": "client1"},
    )
    assert [c["id"] for c in body["data"]] == ["db01", "web01"]


async def test_query_errors_are_upstreams(upstream_api: Api) -> None:
    status, body = await upstream_api.get("/clients", params={"sort": "os_arch"})
    assert status == 400
    assert body["errors"][0]["title"] == "unsupported sort field 'os_arch'"

    status, body = await upstream_api.get("/clients", params=[("sort", "id"), ("sort", "name")])
    assert status == 400
    assert body["errors"][0]["title"] == "Only one sort field is supported for clients."

    status, body = await upstream_api.get("/clients", params={"filter[foo]": "x"})
    assert status == 400
    assert body["errors"][0]["title"] == "unsupported filter field 'filter[foo]'"

    status, body = await upstream_api.get("/clients", params={"page[limit]": "501"})
    assert status == 400
    assert body["errors"][0]["title"] == "pagination limit too big (501) maximum is 500"

    status, body = await upstream_api.get("/clients", params={"fields[clients]": "id,nope"})
    assert status == 400
    assert body["errors"][0]["title"] == 'unsupported field "nope" for resource "clients"'


async def test_delete_disconnected_client(upstream_api: Api) -> None:
    status, _ = await upstream_api.delete("/clients/alpha")
    assert status == 204
    status, body = await upstream_api.get("/clients/alpha")
    assert status == 404  # upstream's client access middleware answers before the handler
    assert body["errors"][0]["title"] == 'Client with id="alpha" not found.'
    status, body = await upstream_api.delete("/clients/alpha")
    assert status == 404
    assert body["errors"][0]["title"] == 'Client with id="alpha" not found.'


async def test_deletion_reaches_the_file(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    db_path = tmp_path / "node" / "data" / "clients.db"
    make_upstream_clients_db(db_path)
    server = await make_server()
    api = Api(http, api_base(server), ADMIN)
    assert (await api.delete("/clients/alpha"))[0] == 204
    await server.stop()
    db = sqlite3.connect(db_path)
    ids = sorted(r[0] for r in db.execute("SELECT id FROM clients"))
    version = db.execute("SELECT version, dirty FROM schema_migrations").fetchall()
    db.close()
    assert ids == ["db01", "web01", "win01"]
    assert version == [(3, 0)]
