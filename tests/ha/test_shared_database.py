"""HA over one MariaDB/PostgreSQL database: the database replicates its tables, not rportd."""

from __future__ import annotations

import aiohttp
import pytest

from rportd.ha.changelog import ReadOnlyReplica
from tests.access.conftest import ADMIN_PW, make_users_db
from tests.conftest import Api
from tests.dbservers import TestDatabase
from tests.ha.test_replication import Pair, _state, eventually, pair

__all__ = ["pair"]

IN_DATABASE = {"client_auth", "api_users", "api_user_groups"}


async def test_nodes_share_the_database_tables(pair: Pair, server_db: TestDatabase) -> None:
    db = await make_users_db(
        server_db,
        [("admin", ADMIN_PW, ["Administrators"])],
        {"Ops": {"commands": True}},
        clients_auth={"client1": "secret-1"},
    )
    pair.sections = {
        "server": {"auth_file": None, "auth_table": "clients_auth"},
        "api": {
            "auth_file": None,
            "auth_user_table": "users",
            "auth_group_table": "groups",
            "auth_group_details_table": "group_details",
        },
        "database": db.section,
    }
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _state(secondary, "standby"))
    assert not IN_DATABASE & (set(primary.replicated) | set(secondary.replicated))

    async with aiohttp.ClientSession() as http:
        on_primary = Api(http, f"{pair.primary_url}/api/v1", ("admin", ADMIN_PW))
        on_secondary = Api(http, f"{pair.secondary_url}/api/v1", ("admin", ADMIN_PW))
        status, _ = await on_primary.post(
            "/clients-auth", json={"id": "client2", "password": "pw-client2"}
        )
        assert status == 201
        dave = {"username": "dave", "password": "dave-password-1234", "groups": ["Ops"]}
        assert (await on_primary.post("/users", json=dave))[0] == 201
        ops = {"permissions": {"commands": True, "tunnels": True}}
        assert (await on_primary.put("/user-groups/Ops", json=ops))[0] == 200

        # Written once, to the database; the secondary reads them there at once.
        assert await db.run("SELECT id FROM clients_auth ORDER BY id") == [
            ("client1",),
            ("client2",),
        ]
        assert await secondary.credentials.lookup("client2") == "pw-client2"
        status, body = await on_secondary.as_user("dave", "dave-password-1234").get("/me")
        assert status == 200 and body["data"]["effective_user_permissions"]["tunnels"] is True
        assert primary.ha is not None
        logged = {change.dataset for change in await primary.ha.changelog.read(0)}
        assert not logged & IN_DATABASE

        # The secondary still refuses writes to them, and names the primary.
        status, body = await on_secondary.post(
            "/clients-auth", json={"id": "rogue", "password": "pw-rogue"}
        )
        assert status == 403 and pair.primary_url in body["errors"][0]["title"]
        assert (await on_secondary.delete("/users/dave"))[0] == 403

    with pytest.raises(ReadOnlyReplica):
        await secondary.credentials.add("rogue", "pw-3")
    assert secondary.users is not None
    with pytest.raises(ReadOnlyReplica):
        await secondary.users.delete("dave")
    assert await db.run("SELECT id FROM clients_auth WHERE id = 'rogue'") == []
    assert await db.run("SELECT username FROM users WHERE username = 'dave'") == [("dave",)]
