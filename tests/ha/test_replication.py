"""Replication between two in-process nodes: timing, catch-up, restart, refusals."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from rportd.app import RportServer
from rportd.auth.users import User
from rportd.clients.model import Client
from rportd.ha import auth
from rportd.ha.changelog import ReadOnlyReplica
from tests.conftest import server_config
from tests.ha.cluster import free_port

SECRET = "replication-test-secret"


class Pair:
    """A primary and a secondary in this process, with fixed ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.p_api, self.s_api = free_port(), free_port()
        self.primary_url = f"http://127.0.0.1:{self.p_api}"
        self.secondary_url = f"http://127.0.0.1:{self.s_api}"
        self.running: list[RportServer] = []
        self.sections: dict[str, dict[str, Any]] = {}  # config of both nodes, over the defaults

    def config(self, name: str, role: str, **ha: Any) -> Any:
        node = self.root / name
        node.mkdir(parents=True, exist_ok=True)
        creds = node / "client-auth.json"
        if not creds.exists():
            creds.write_text(json.dumps({"client1": "secret-1"}))
        users = node / "api-users.json"
        if not users.exists():
            hashed = bcrypt.hashpw(b"admin-password-123", bcrypt.gensalt(4)).decode()
            users.write_text(
                json.dumps(
                    [
                        {
                            "username": "admin",
                            "password": "$2y$" + hashed[4:],
                            "groups": ["Administrators"],
                        }
                    ]
                )
            )
        port = self.p_api if role == "primary" else self.s_api
        ha_section: dict[str, Any] = {
            "role": role,
            "cluster_secret": SECRET,
            "peers": [self.secondary_url if role == "primary" else self.primary_url],
            "takeover_after": "30s",
        }
        if role == "secondary":
            ha_section["primary"] = self.primary_url
        ha_section.update(ha)
        sections: dict[str, dict[str, Any]] = {
            "server": {"auth": None, "auth_file": str(creds)},
            "api": {"auth": None, "auth_file": str(users), "address": f"127.0.0.1:{port}"},
            "ha": ha_section,
        }
        for section, values in self.sections.items():
            sections[section] = {**sections.get(section, {}), **values}
        return server_config(node, **sections)

    async def start(self, name: str, role: str, **ha: Any) -> RportServer:
        server = RportServer(self.config(name, role, **ha))
        await server.start()
        self.running.append(server)
        return server

    async def stop(self, server: RportServer) -> None:
        await server.stop()
        self.running.remove(server)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    pair = Pair(tmp_path)
    yield pair
    for server in reversed(pair.running):
        await server.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> float:
    """Poll ``check`` until true; return the time it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise TimeoutError("condition not met")


async def test_changes_reach_the_secondary_within_a_second(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    assert secondary.ha is not None
    await eventually(lambda: _state(secondary, "standby"))
    delays = []
    for i in range(40):
        auth_id = f"client-{i}"
        await primary.credentials.add(auth_id, f"pw-{i}")

        async def arrived(auth_id: str = auth_id, password: str = f"pw-{i}") -> bool:
            return await _has_credential(secondary, auth_id, password)

        delays.append(await eventually(arrived))
    delays.sort()
    p99 = delays[int(len(delays) * 0.99) - 1]
    assert p99 < 1.0, f"p99 {p99:.3f}s"
    on_disk = json.loads((pair.root / "s" / "client-auth.json").read_text())
    assert on_disk["client-39"] == "pw-39"
    # Users, including a rename (a delete plus an upsert) and a deletion.
    assert primary.users is not None and secondary.users is not None
    await primary.users.add(User("bob", "$2y$10$abcdefghijklmnopqrstuv", ["Administrators"]))
    await primary.users.update("bob", User("robert", "$2y$10$abcdefghijklmnopqrstuv", ["ops"]))
    await primary.credentials.delete("client-0")
    await eventually(lambda: _no_credential(secondary, "client-0"))
    robert = await secondary.users.get("robert")
    assert robert is not None and robert.groups == ["ops"]
    assert await secondary.users.get("bob") is None


async def test_secondary_refuses_writes_of_its_own(pair: Pair) -> None:
    await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    with pytest.raises(ReadOnlyReplica):
        await secondary.credentials.add("rogue", "pw")
    assert await secondary.credentials.lookup("rogue") is None
    assert "rogue" not in (pair.root / "s" / "client-auth.json").read_text()
    # Through the API: a password change at login is a write to replicated data.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{pair.secondary_url}/api/v1/login",
            json={"username": "admin", "password": "admin-password-123", "new_password": "x" * 20},
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 403
        title = body["errors"][0]["title"]
        assert "secondary" in title and pair.primary_url in title


async def test_catch_up_by_snapshot_and_resume_after_restart(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rportd.ha")
    primary = await pair.start("p", "primary")
    for i in range(5):
        await primary.credentials.add(f"early-{i}", "pw")
    assert primary.ha is not None
    await primary.ha.changelog.truncate(keep=2)  # the start of the log is gone
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _has_credential(secondary, "early-0", "pw"))
    await eventually(lambda: _logged(caplog, "restored a snapshot"))
    caplog.clear()

    await primary.credentials.add("while-up", "pw")
    await eventually(lambda: _has_credential(secondary, "while-up", "pw"))
    await pair.stop(secondary)
    await primary.credentials.add("while-down", "pw")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _has_credential(secondary, "while-down", "pw"))
    assert "restored a snapshot" not in caplog.text  # resumed from its position
    assert secondary.ha is not None

    async def same_position() -> bool:
        assert primary.ha is not None and secondary.ha is not None
        return secondary.ha.changelog.position == primary.ha.changelog.position

    await eventually(same_position)


async def test_replication_refused_with_a_wrong_secret(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary", cluster_secret="not-the-secret")
    await primary.credentials.add("fresh", "pw")
    await asyncio.sleep(1.0)
    assert await secondary.credentials.lookup("fresh") is None
    assert secondary.ha is not None and secondary.ha.state == "standby"
    assert "refuses this node" in secondary.ha.reason
    assert "cluster_secret differs" in secondary.ha.reason
    async with aiohttp.ClientSession() as http:
        headers = {auth.HEADER: auth.sign("wrong", "x", 9, "GET", "/api/v1/ha/node")}
        async with http.get(f"{pair.primary_url}/api/v1/ha/node", headers=headers) as resp:
            assert resp.status == 403
            body = await resp.json()
            assert "cluster_secret differs" in body["errors"][0]["title"]


async def test_secondary_refuses_a_primary_with_a_lower_epoch(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await primary.credentials.add("before", "pw")
    await eventually(lambda: _has_credential(secondary, "before", "pw"))
    await pair.stop(secondary)
    state = pair.root / "s" / "data" / "ha-state.json"
    data = json.loads(state.read_text())
    data["epoch"] = 5  # this node has followed a newer primary since
    state.write_text(json.dumps(data))
    secondary = await pair.start("s", "secondary")
    await primary.credentials.add("stale", "pw")
    await asyncio.sleep(1.0)
    assert await secondary.credentials.lookup("stale") is None
    assert secondary.ha is not None
    assert "epoch" in secondary.ha.reason


async def _state(server: RportServer, state: str) -> bool:
    return server.ha is not None and server.ha.state == state


async def _has_credential(server: RportServer, auth_id: str, password: str) -> bool:
    return await server.credentials.lookup(auth_id) == password


async def _no_credential(server: RportServer, auth_id: str) -> bool:
    return await server.credentials.lookup(auth_id) is None


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def test_bearer_tokens_work_on_the_secondary(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _state(secondary, "standby"))
    basic = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-password-123")}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{pair.primary_url}/api/v1/login", headers=basic) as resp:
            token = (await resp.json())["data"]["token"]
        bearer = {"Authorization": f"Bearer {token}"}

        async def accepted_on_secondary(expected: int = 200) -> bool:
            async with http.get(f"{pair.secondary_url}/api/v1/me", headers=bearer) as resp:
                return resp.status == expected

        await eventually(accepted_on_secondary)
        async with http.delete(f"{pair.primary_url}/api/v1/logout", headers=bearer) as resp:
            assert resp.status == 204
        await eventually(lambda: accepted_on_secondary(401))

        # Logging in on the secondary works; that session stays local.
        async with http.get(f"{pair.secondary_url}/api/v1/login", headers=basic) as resp:
            assert resp.status == 200
            local = {"Authorization": f"Bearer {(await resp.json())['data']['token']}"}
        async with http.get(f"{pair.secondary_url}/api/v1/me", headers=local) as resp:
            assert resp.status == 200
        async with http.get(f"{pair.primary_url}/api/v1/me", headers=local) as resp:
            assert resp.status == 401
    assert primary.sessions is not None


async def test_snapshot_while_sessions_have_pending_updates(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    basic = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-password-123")}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{pair.primary_url}/api/v1/login", headers=basic) as resp:
            token = (await resp.json())["data"]["token"]
        async with http.get(
            f"{pair.primary_url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200  # leaves an unflushed access update
    secondary = await pair.start("s", "secondary")
    assert primary.sessions is not None and secondary.sessions is not None
    await asyncio.wait_for(eventually(lambda: _state(secondary, "standby")), 5)

    async def has_session() -> bool:
        assert secondary.sessions is not None
        return bool(await secondary.sessions.snapshot())

    await eventually(has_session)


async def test_client_acls_replicate_to_clients_never_seen_there(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    primary.clients.registry.adopt(Client(id="web01", client_auth_id="client1"))
    await primary.client_acls.set("web01", ["ops"])
    client = primary.clients.registry.get("web01")
    assert client is not None and client.allowed_user_groups == ["ops"]

    async def arrived() -> bool:
        return await secondary.client_acls.snapshot() == {"web01": {"allowed_user_groups": ["ops"]}}

    await eventually(arrived)
    # The client never connected to the secondary; new records there start with its ACL.
    assert secondary.clients.registry.acl_lookup("web01") == ["ops"]
    with pytest.raises(ReadOnlyReplica):
        await secondary.client_acls.set("web01", [])


async def test_every_replicated_write_is_refused_on_the_secondary(pair: Pair) -> None:
    await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    from rportd.api.app import create_api_app

    routes = [
        (route.method, route.resource.canonical)
        for route in create_api_app(secondary).router.routes()
        if route.resource is not None and getattr(route.handler, "rportd_replicated", False)
    ]
    assert len(routes) >= 15
    basic = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-password-123")}
    async with aiohttp.ClientSession() as http:
        for method, canonical in routes:
            path = re.sub(r"\{[^}]+\}", "x1", canonical)
            async with http.request(
                method, pair.secondary_url + path, headers=basic, json={}
            ) as resp:
                body = await resp.json()
                assert resp.status == 403, (method, path, body)
                title = body["errors"][0]["title"]
                assert "secondary" in title and pair.primary_url in title, (method, path)


async def test_library_and_stored_tunnels_replicate(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    basic = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-password-123")}
    async with aiohttp.ClientSession() as http:

        async def call(base: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
            async with http.request(method, base + "/api/v1" + path, headers=basic, **kw) as resp:
                text = await resp.text()
                return resp.status, json.loads(text) if text else None

        status, body = await call(
            pair.primary_url,
            "POST",
            "/library/commands",
            json={"name": "uptime", "cmd": "/usr/bin/uptime", "tags": ["linux"]},
        )
        assert status == 201, body
        command_id = body["data"]["id"]
        status, body = await call(
            pair.primary_url,
            "POST",
            "/library/scripts",
            json={"name": "hello", "script": "echo hello", "interpreter": "/bin/sh"},
        )
        assert status == 201, body
        primary.clients.registry.adopt(Client(id="web01", client_auth_id="client1"))
        status, body = await call(
            pair.primary_url,
            "POST",
            "/clients/web01/stored-tunnels",
            json={"name": "ssh", "scheme": "ssh", "remote_ip": "127.0.0.1", "remote_port": 22},
        )
        assert status == 200, body

        async def arrived() -> bool:
            scripts = await call(pair.secondary_url, "GET", "/library/scripts")
            command = await call(pair.secondary_url, "GET", f"/library/commands/{command_id}")
            stored = await secondary.stored_tunnels.snapshot()
            return (
                command[0] == 200
                and [s["name"] for s in scripts[1]["data"]] == ["hello"]
                and [d["name"] for d in stored.values()] == ["ssh"]
            )

        await eventually(arrived)
        status, body = await call(pair.secondary_url, "GET", f"/library/commands/{command_id}")
        assert body["data"]["cmd"] == "/usr/bin/uptime"
        await call(pair.primary_url, "DELETE", f"/library/commands/{command_id}")

        async def deleted() -> bool:
            status, _ = await call(pair.secondary_url, "GET", f"/library/commands/{command_id}")
            return status == 404

        await eventually(deleted)


async def test_edits_of_auth_files_outside_rportd(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _has_credential(secondary, "client1", "secret-1"))
    primary_file = pair.root / "p" / "client-auth.json"
    secondary_file = pair.root / "s" / "client-auth.json"

    # An operator edits the primary's file by hand: the change reaches the secondary.
    primary_file.write_text(json.dumps({"client1": "secret-1", "by-hand": "pw-hand"}))
    await eventually(lambda: _has_credential(secondary, "by-hand", "pw-hand"), timeout=10)

    # An edit while the primary is down (as `rportd user` does with the users file).
    await pair.stop(primary)
    users_file = pair.root / "p" / "api-users.json"
    users = json.loads(users_file.read_text())
    users.append({"username": "offline", "password": users[0]["password"], "groups": []})
    users_file.write_text(json.dumps(users))
    primary = await pair.start("p", "primary")

    async def user_arrived() -> bool:
        assert secondary.users is not None
        return await secondary.users.get("offline") is not None

    await eventually(user_arrived, timeout=10)

    # A hand edit on the secondary is put back: its data only comes from its primary.
    secondary_file.write_text(json.dumps({"rogue": "x"}))

    async def put_back() -> bool:
        return "rogue" not in json.loads(secondary_file.read_text() or "{}")

    await eventually(put_back, timeout=10)

    async def served_from_the_put_back_file() -> bool:
        # The file is restored first; the credentials in memory follow it.
        return await _has_credential(secondary, "by-hand", "pw-hand") and (
            await secondary.credentials.lookup("rogue") is None
        )

    await eventually(served_from_the_put_back_file, timeout=5)
