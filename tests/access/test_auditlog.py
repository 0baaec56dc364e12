"""The audit log: entries for mutating calls, ``GET /auditlog``, rotation, idempotent inserts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rportd.api import app as api_app
from rportd.api.app import create_api_app
from rportd.api.audit import audit_note
from rportd.api.responses import envelope, no_content
from rportd.api.views import jobs as jobs_views
from rportd.api.views import tunnels as tunnels_views
from rportd.api.views import vault as vault_views
from rportd.app import RportServer
from rportd.auditlog.entry import AuditEntry
from rportd.auditlog.routes import AUDITED_ROUTES, route_key
from rportd.auditlog.store import AuditLog, next_period_start, period_start
from tests.access.conftest import ADMIN_PW, api_for, default_users_file
from tests.conftest import Api, ServerFactory


async def entries(api: Api, **params: str) -> list[dict[str, Any]]:
    status, body = await api.get("/auditlog", params={"page[limit]": "100", **params})
    assert status == 200, body
    data = body["data"]
    assert isinstance(data, list)
    return data


async def test_mutations_are_audited(admin: Api, bob: Api) -> None:
    assert (await admin.post("/clients-auth", json={"id": "client2", "password": "pw-2"}))[0] == 201
    assert (await admin.post("/clients-auth", json={"id": "client2", "password": "xyz"}))[0] == 409
    assert (await admin.delete("/clients-auth/client2", params={"force": "1"}))[0] == 204
    new_user = {"username": "carol", "password": "carol-password-1234", "groups": ["Users"]}
    assert (await admin.post("/users", json=new_user))[0] == 201
    assert (await admin.put("/users/carol", json={"groups": []}))[0] == 204
    assert (await admin.delete("/users/carol"))[0] == 204
    group = {"id": "web", "description": "", "params": {"tag": ["web"]}}
    assert (await admin.post("/client-groups", json=group))[0] == 201
    _status, body = await bob.post("/me/tokens", json={"scope": "read", "name": "t"})
    prefix = body["data"]["prefix"]
    assert (await bob.put(f"/me/tokens/{prefix}", json={"name": "t2"}))[0] == 200
    assert (await bob.get("/me/tokens"))[0] == 200  # reads are not audited

    found = await entries(admin)
    summary = [(e["username"], e["application"], e["action"], e["affected_id"]) for e in found]
    assert summary == [
        ("admin", "client.auth", "create", "client2"),
        ("admin", "client.auth", "delete", "client2"),
        ("admin", "auth.user", "create", "carol"),
        ("admin", "auth.user", "update", "carol"),
        ("admin", "auth.user", "delete", "carol"),
        ("admin", "client.group", "create", "web"),
        ("bob", "auth.user.me.token", "create", f"[bob,{prefix}]"),
        ("bob", "auth.user.me.token", "update", "bob"),
    ]
    by_action = {(e["application"], e["action"]): e for e in found}
    assert by_action[("client.auth", "delete")]["request"] == '{"force":true}'
    assert by_action[("client.auth", "create")]["request"] == ""  # the password is not kept
    assert by_action[("auth.user", "create")]["request"] == ""
    assert json.loads(by_action[("client.group", "create")]["request"]) == group
    assert json.loads(by_action[("auth.user.me.token", "update")]["request"]) == {"name": "t2"}
    first = found[0]
    assert first["remote_ip"] == "127.0.0.1" and first["client_id"] == ""
    assert datetime.fromisoformat(first["timestamp"]) <= datetime.now(UTC)
    assert list(first) == [
        "timestamp",
        "username",
        "remote_ip",
        "application",
        "action",
        "affected_id",
        "client_id",
        "client_hostname",
        "request",
        "response",
    ]


async def test_list_options_and_non_admins(admin: Api, bob: Api) -> None:
    for i in range(12):
        body = {"id": f"client-{i:02d}", "password": "pw!"}
        assert (await admin.post("/clients-auth", json=body))[0] == 201
    status, _ = await bob.post("/me/tokens", json={"scope": "read", "name": "mine"})
    assert status == 200

    status, body = await admin.get("/auditlog")
    assert status == 200 and len(body["data"]) == 10 and body["meta"]["count"] == 13
    assert body["data"][0]["affected_id"] == "client-00"  # oldest first
    status, body = await admin.get(
        "/auditlog", params={"sort": "-timestamp", "page[limit]": "2", "page[offset]": "1"}
    )
    assert [e["affected_id"] for e in body["data"]] == ["client-11", "client-10"]
    found = await entries(
        admin, **{"filter[application]": "client.auth", "filter[affected_id]": "*-1*"}
    )
    assert [e["affected_id"] for e in found] == ["client-10", "client-11"]
    found = await entries(admin, **{"filter[username]": "bob"})
    assert [e["application"] for e in found] == ["auth.user.me.token"]
    since = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await entries(admin, **{"filter[timestamp][since]": since}) == []
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(await entries(admin, **{"filter[timestamp][since]": today})) == 13
    status, body = await admin.get("/auditlog", params={"page[limit]": "101"})
    assert status == 400 and body["errors"][0]["title"] == (
        "pagination limit too big (101) maximum is 100"
    )
    status, body = await admin.get("/auditlog", params={"filter[request]": "x"})
    assert status == 400

    mine = await entries(bob)
    assert [e["username"] for e in mine] == ["bob"]
    status, body = await bob.get("/auditlog", params={"filter[username]": "admin"})
    assert status == 403
    assert body["errors"][0] == {
        "code": "",
        "title": "filter forbidden",
        "detail": "only members of group Administrators can filter by usernames",
    }
    assert await entries(bob, **{"filter[application]": "client.auth"}) == []


async def test_disabled_and_obfuscated(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    users = default_users_file(tmp_path / "users.json")
    off = await make_server(
        "off", api={"auth": None, "auth_file": str(users), "enable_audit_log": False}
    )
    api = api_for(off, http, "admin", ADMIN_PW)
    assert (await api.post("/users", json={"username": "x", "password": "x" * 20}))[0] == 201
    assert await entries(api) == []
    assert not (off.data_dir / "auditlog.db").exists()
    _status, body = await api.get("/status")
    assert body["data"]["auditlog"] == {"enabled": False, "rotation": "monthly"}

    hidden = await make_server(
        "hidden",
        api={
            "auth": None,
            "auth_file": str(users),
            "use_ip_obfuscation": True,
            "trusted_proxies": ["127.0.0.1"],  # the header below comes from a proxy
        },
    )
    api = api_for(hidden, http, "admin", ADMIN_PW)
    headers = {"X-Forwarded-For": "203.0.113.77"}
    body = {"username": "y", "password": "y" * 20}
    assert (await api.post("/users", json=body, headers=headers))[0] == 201
    [entry] = await entries(api)
    assert entry["remote_ip"] == "203.0.113.x"


@pytest.fixture
async def fake_routes(
    file_server: RportServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The API app with stand-ins for routes other concerns add (tunnels, commands, vault)."""
    # POST /commands, the tunnel and vault routes exist for real now; the stand-ins replace them.
    real = (jobs_views, tunnels_views, vault_views)
    monkeypatch.setattr(api_app, "VIEWS", tuple(v for v in api_app.VIEWS if v not in real))
    app = create_api_app(file_server)

    async def put_tunnel(request: web.Request) -> web.Response:
        return envelope({"id": "7", "lport": request.query.get("local")})

    async def delete_tunnel(request: web.Request) -> web.Response:
        return no_content()

    async def multi_command(request: web.Request) -> web.Response:
        audit_note(request).clients = [("web-1", "host-1"), ("web-2", "host-2")]
        return envelope({"jid": "job-42"})

    async def store_secret(request: web.Request) -> web.Response:
        return envelope({"id": 5}, status=201)

    app.router.add_put("/api/v1/clients/{cid}/tunnels", put_tunnel)
    app.router.add_delete("/api/v1/clients/{cid}/tunnels/{tid}", delete_tunnel)
    app.router.add_post("/api/v1/commands", multi_command)
    app.router.add_post("/api/v1/vault", store_secret)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/api/v1"))
    await server.close()


async def test_audit_middleware_covers_other_routes(
    fake_routes: str, http: aiohttp.ClientSession, admin: Api
) -> None:
    api = Api(http, fake_routes, ("admin", ADMIN_PW))
    assert (await api.put("/clients/c9/tunnels", params={"local": "2222", "remote": "22"}))[
        0
    ] == 200
    assert (await api.delete("/clients/c9/tunnels/7", params={"force": "true"}))[0] == 204
    assert (await api.post("/commands", json={"command": "uptime", "group_ids": ["web"]}))[0] == 200
    body = {"client_id": "c9", "key": "db", "value": "hunter2", "type": "secret"}
    assert (await api.post("/vault", json=body))[0] == 201

    found = await entries(admin)
    tunnel, closed, cmd1, cmd2, vault = found
    assert (tunnel["application"], tunnel["action"], tunnel["affected_id"]) == (
        "client.tunnel",
        "create",
        "7",
    )
    assert tunnel["client_id"] == "c9"
    assert json.loads(tunnel["request"]) == {"local": "2222", "remote": "22"}
    assert json.loads(tunnel["response"]) == {"id": "7", "lport": "2222"}
    assert (closed["action"], closed["affected_id"], closed["request"]) == (
        "delete",
        "7",
        '{"force":true}',
    )
    assert [(c["client_id"], c["client_hostname"]) for c in (cmd1, cmd2)] == [
        ("web-1", "host-1"),
        ("web-2", "host-2"),
    ]
    assert cmd1["action"] == "execute.start" and cmd1["affected_id"] == "job-42"
    assert json.loads(cmd1["response"]) == {"jid": "job-42"}
    assert vault["application"] == "vault" and vault["affected_id"] == "5"
    assert vault["client_id"] == "c9"
    assert "hunter2" not in vault["request"] and json.loads(vault["request"])["key"] == "db"


def test_route_table_covers_upstream_applications() -> None:
    apps = {rule.application for rule in AUDITED_ROUTES.values()}
    assert apps == {
        "auth.user",
        "auth.user.me",
        "auth.user.me.token",
        "auth.user.totp",
        "auth.user.group",
        "auth.api.session",
        "auth.api.sessions",
        "client",
        "client.acl",
        "client.auth",
        "client.group",
        "client.tunnel",
        "client.command",
        "client.script",
        "library.command",
        "library.script",
        "vault",
        "schedule",
        "uploads",
    }
    assert route_key("PUT", "/api/v1/clients/{client_id}/tunnels/{tunnel_id}/acl") == (
        "PUT",
        "/clients/{}/tunnels/{}/acl",
    )
    assert ("PUT", "/clients/{}/tunnels/{}/acl") in AUDITED_ROUTES


def test_period_boundaries() -> None:
    moment = datetime(2024, 5, 15, 13, 30, tzinfo=UTC)  # a Wednesday
    assert period_start(moment, "daily") == datetime(2024, 5, 15, tzinfo=UTC)
    assert period_start(moment, "weekly") == datetime(2024, 5, 13, tzinfo=UTC)
    assert period_start(moment, "monthly") == datetime(2024, 5, 1, tzinfo=UTC)
    assert period_start(moment, "yearly") == datetime(2024, 1, 1, tzinfo=UTC)
    assert next_period_start(moment, "monthly") == datetime(2024, 6, 1, tzinfo=UTC)
    assert next_period_start(datetime(2024, 12, 31, tzinfo=UTC), "monthly") == datetime(
        2025, 1, 1, tzinfo=UTC
    )
    assert next_period_start(moment, "weekly") == datetime(2024, 5, 20, tzinfo=UTC)


async def test_rotation_and_idempotent_insert(tmp_path: Path) -> None:
    now = [datetime(2024, 5, 31, 23, 59, tzinfo=UTC)]
    log = AuditLog(tmp_path, rotation="monthly", clock=lambda: now[0])
    await log.open()
    try:
        entry = AuditEntry("client.auth", "create", timestamp=now[0], affected_id="a", username="u")
        assert await log.insert(entry) is True
        assert await log.insert(entry) is False  # the same entry again: stored once
        again = AuditEntry.from_document(json.loads(json.dumps(entry.document())))
        assert await log.insert_documents([again.document()]) == 0
        other = AuditEntry("client.auth", "create", timestamp=now[0], affected_id="b", username="u")
        assert await log.insert(other) is True
        assert (await log.find(entry.key)) == entry
        assert await log.rotate_if_due() is False

        now[0] = datetime(2024, 6, 1, 0, 0, 5, tzinfo=UTC)
        assert await log.rotate_if_due() is True
        archive = tmp_path / "auditlog.2024-06-01.db"
        con = sqlite3.connect(archive)
        assert con.execute("SELECT affected_id FROM auditlog ORDER BY rowid").fetchall() == [
            ("a",),
            ("b",),
        ]
        con.close()
        found, count = await log.query("", {}, "", "")
        assert (found, count) == ([], 0)
        assert await log.insert(AuditEntry("client", "delete", timestamp=now[0])) is True
        assert await log.rotate_if_due() is False
    finally:
        await log.close()


async def test_rotation_at_start(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    data = tmp_path / "node" / "data"
    data.mkdir(parents=True)
    old = AuditLog(data, rotation="daily")
    await old.open()
    await old.insert(
        AuditEntry("auth.user", "create", timestamp=datetime.now(UTC) - timedelta(days=2))
    )
    await old.close()
    server = await make_server(api={"audit_log_rotation": "daily"})
    archives = sorted(p.name for p in server.data_dir.glob("auditlog.*.db"))
    assert archives == [f"auditlog.{datetime.now(UTC):%Y-%m-%d}.db"]
    api = api_for(server, http, "admin", "admin-password-123")
    assert await entries(api) == []


async def test_concurrent_inserts_are_all_stored_once(tmp_path: Path) -> None:
    """Calls that arrive while another one writes share its next commit; none is lost."""
    log = AuditLog(tmp_path)
    await log.open()
    try:
        moment = datetime(2024, 5, 15, 13, 30, tzinfo=UTC)
        entries = [
            AuditEntry("client.command", "execute.done", timestamp=moment, affected_id=str(i))
            for i in range(200)
        ]
        results = await asyncio.gather(
            *(log.insert_many([e]) for e in entries),
            log.insert_many(entries[:3]),  # the same entries again, in the same burst
        )
        assert [r[0] for r in results[:200]] == [True] * 200
        assert results[200] == [False] * 3
        found, count = await log.query("", {}, "", "")
        assert count == 200
        assert sorted(int(e.affected_id) for e in found) == list(range(200))
    finally:
        await log.close()
