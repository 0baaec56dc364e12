"""Details the web UI draws as upstream sends them: Go map key order, ``*_restricted``,
and the start-up line upstream's tooling waits for."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.access.conftest import BOB_PW, api_for, db_sections, make_users_db
from tests.conftest import ServerFactory
from tests.dbservers import sqlite_database

ADMIN_PW = "admin-password-123"


async def test_status_and_permissions_keys_in_go_map_order(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = await make_users_db(
        sqlite_database(tmp_path),
        [("admin", ADMIN_PW, ["Administrators"]), ("bob", BOB_PW, ["Users"])],
        {"Users": {"tunnels": True, "commands": True}},
    )
    server = await make_server(**db_sections(db))
    bob = api_for(server, http, "bob", BOB_PW)

    status, body = await bob.get("/status")
    assert status == 200
    keys = list(body["data"])
    assert keys == sorted(keys) and "version" in keys and "auth_header" in keys

    status, body = await bob.get("/me")
    permissions = body["data"]["effective_user_permissions"]
    assert list(permissions) == [
        "auditlog",
        "commands",
        "monitoring",
        "scheduler",
        "scripts",
        "tunnels",
        "uploads",
        "vault",
    ]
    assert [k for k, v in permissions.items() if v] == ["commands", "tunnels"]

    admin = api_for(server, http, "admin", ADMIN_PW)
    status, body = await admin.get("/user-groups")
    assert status == 200
    for group in body["data"]:
        assert list(group["permissions"]) == sorted(group["permissions"])


async def test_restricted_permissions_as_stored(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = await make_users_db(
        sqlite_database(tmp_path),
        [("admin", ADMIN_PW, ["Administrators"]), ("bob", BOB_PW, ["Users", "Ops"])],
        {"Users": {"tunnels": True}, "Ops": {"commands": True}, "Empty": {}},
    )
    with sqlite3.connect(db.name) as con:  # upstream's documented table has these columns
        for column in ("tunnels_restricted", "commands_restricted"):
            con.execute(f"ALTER TABLE group_details ADD COLUMN {column} TEXT DEFAULT '{{}}'")
        con.execute(
            "UPDATE group_details SET commands_restricted = NULL, "
            """tunnels_restricted = '{"local": ["0.0.0.0"]}' WHERE name = 'Ops'"""
        )
    server = await make_server(**db_sections(db))
    admin = api_for(server, http, "admin", ADMIN_PW)

    status, body = await admin.get("/user-groups")
    assert status == 200
    groups = {g["name"]: g for g in body["data"]}
    assert groups["Users"]["tunnels_restricted"] == {}
    assert groups["Users"]["commands_restricted"] == {}
    assert groups["Ops"]["tunnels_restricted"] == {"local": ["0.0.0.0"]}
    assert groups["Ops"]["commands_restricted"] is None
    status, body = await admin.get("/user-groups/Users")
    assert (body["data"]["tunnels_restricted"], body["data"]["commands_restricted"]) == ({}, {})

    status, body = await api_for(server, http, "bob", BOB_PW).get("/me")
    assert body["data"]["effective_extended_permissions"] == {
        "tunnels_restricted": [{"local": ["0.0.0.0"]}, {}],  # Ops, then Users
        "commands_restricted": [{}],
    }
    # None of the admin's groups has a details row: null, as upstream.
    status, body = await admin.get("/me")
    assert body["data"]["effective_extended_permissions"] == {
        "tunnels_restricted": None,
        "commands_restricted": None,
    }


async def test_startup_log_has_upstreams_api_listening_line(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rportd")
    server = await make_server()
    assert server.api_address is not None
    host, port = server.api_address
    assert f"API Listening on {host}:{port}..." in caplog.messages
