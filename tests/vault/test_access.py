"""Who may use the vault: the ``vault`` permission, admins, and ``required_group``."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.access.conftest import ADMIN_PW, api_for, db_sections, make_users_db
from tests.conftest import ServerFactory
from tests.dbservers import sqlite_database

PASSWORD = "group-test-pass"
NO_VAULT = 'user does not have "vault" permission'
NOT_ADMIN = "current user should belong to Administrators group to access this resource"
WRONG_GROUP = "your group doesn't allow access to this value"


async def test_required_group_and_permissions(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = await make_users_db(
        sqlite_database(tmp_path),
        [
            ("admin", ADMIN_PW, ["Administrators"]),
            ("alice", "alice-password-123", ["ops"]),
            ("bob", "bob-password-12345", ["dev"]),
            ("carol", "carol-password-123", ["guests"]),
        ],
        {"ops": {"vault": True}, "dev": {"vault": True}, "guests": {"commands": True}},
    )
    server = await make_server(**db_sections(db))
    admin = api_for(server, http, "admin", ADMIN_PW)
    alice = api_for(server, http, "alice", "alice-password-123")
    bob = api_for(server, http, "bob", "bob-password-12345")
    carol = api_for(server, http, "carol", "carol-password-123")

    # Without the vault permission nothing is reachable, not even the status.
    for call in (carol.get("/vault-admin"), carol.get("/vault"), carol.get("/vault/1")):
        status, body = await call
        assert (status, body["errors"][0]["title"]) == (403, NO_VAULT)
    # The permission is enough to read the status, not to administer the vault.
    assert (await bob.get("/vault-admin"))[0] == 200
    for call in (
        bob.post("/vault-admin/init", json={"password": PASSWORD}),
        bob.post("/vault-admin/sesame", json={"password": PASSWORD}),
        bob.delete("/vault-admin/sesame"),
    ):
        status, body = await call
        assert (status, body["errors"][0]["title"]) == (403, NOT_ADMIN)
    assert (await admin.post("/vault-admin/init", json={"password": PASSWORD}))[0] == 201

    ops_only = {"key": "prod-db", "value": "ops-secret", "type": "secret", "required_group": "ops"}
    status, body = await bob.post("/vault", json=ops_only)  # may create what it cannot read
    assert status == 201
    value_id = body["data"]["id"]
    open_value = {"key": "wiki", "value": "for everyone", "type": "text"}
    assert (await bob.post("/vault", json=open_value))[0] == 201

    status, body = await alice.get(f"/vault/{value_id}")
    assert (status, body["data"]["value"], body["data"]["created_by"]) == (200, "ops-secret", "bob")
    for user in (bob, admin):  # being an administrator does not replace the group
        status, body = await user.get(f"/vault/{value_id}")
        assert (status, body["errors"][0]["title"]) == (403, WRONG_GROUP)
        status, body = await user.put(f"/vault/{value_id}", json={**ops_only, "value": "x"})
        assert (status, body["errors"][0]["title"]) == (403, WRONG_GROUP)
        status, body = await user.delete(f"/vault/{value_id}")
        assert (status, body["errors"][0]["title"]) == (403, WRONG_GROUP)
    # Listing shows every key (never a value), whatever the group.
    status, body = await bob.get("/vault")
    assert [v["key"] for v in body["data"]] == ["prod-db", "wiki"]
    assert (await bob.get("/vault/2"))[1]["data"]["value"] == "for everyone"

    # Alice changes it (still hers to read), then deletes it.
    status, _ = await alice.put(f"/vault/{value_id}", json={**ops_only, "value": "rotated"})
    assert status == 200
    status, body = await alice.get(f"/vault/{value_id}")
    assert (body["data"]["value"], body["data"]["updated_by"]) == ("rotated", "alice")
    assert (await alice.delete(f"/vault/{value_id}"))[0] == 204
    assert [v["key"] for v in (await bob.get("/vault"))[1]["data"]] == ["wiki"]
