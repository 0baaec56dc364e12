"""Clients connecting: auth sources, upstream's refusals, and a server that stays healthy."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rportd.app import RportServer
from tests.conftest import CLIENT_AUTH, Api, ServerFactory, client_url
from tests.dbservers import TestDatabase
from tests.simulator import RportClientSim, SimulatorConfig, http_request, open_raw

AUTH = ":".join(CLIENT_AUTH)
Sims = list[RportClientSim]


def sim_config(server: RportServer, **kwargs: Any) -> SimulatorConfig:
    kwargs.setdefault("auth", AUTH)
    kwargs.setdefault("client_id", "c1")
    kwargs.setdefault("connect_jitter", 0.0)
    kwargs.setdefault("backoff_min", 0.2)
    kwargs.setdefault("backoff_max", 1.0)
    return SimulatorConfig(server=client_url(server), **kwargs)


@pytest.fixture
async def sims() -> AsyncIterator[list[RportClientSim]]:
    """Simulators started by a test; all stopped at the end."""
    running: list[RportClientSim] = []
    yield running
    for sim in running:
        await sim.stop()


async def start(sims: list[RportClientSim], config: SimulatorConfig) -> RportClientSim:
    sim = RportClientSim(config)
    sims.append(sim)
    await sim.start()
    return sim


async def connect_once(server: RportServer, **kwargs: Any) -> Any:
    """One full connection attempt by a throwaway simulator."""
    sim = RportClientSim(sim_config(server, **kwargs))
    try:
        return await sim.connect_once()
    finally:
        await sim.stop()


async def assert_healthy(server: RportServer, sims: list[RportClientSim]) -> None:
    """A well-behaved client can still connect and register."""
    sim = await start(sims, sim_config(server, client_id="healthy-check"))
    await sim.wait_registered(10)
    assert server.clients.registry.get_connected("healthy-check") is not None


async def client_state(api: Api, client_id: str) -> str:
    status, body = await api.get(f"/clients/{client_id}")
    assert status == 200, body
    return str(body["data"]["connection_state"])


# --- auth sources --------------------------------------------------------------------


async def test_connects_with_single_auth(server: RportServer, api: Api, sims: Sims) -> None:
    sim = await start(
        sims, sim_config(server, tags=["linux", "web"], fingerprint=server.fingerprint)
    )
    await sim.wait_registered(10)
    assert await client_state(api, "c1") == "connected"
    _status, body = await api.get("/clients/c1")
    client = body["data"]
    assert client["tags"] == ["linux", "web"]
    assert client["client_auth_id"] == CLIENT_AUTH[0]
    assert client["hostname"] == "sim-host"
    assert client["client_configuration"]["client"]["auth"] == "********"
    # put_capabilities arrived, once, with our version
    assert sim.capabilities is not None
    assert sim.capabilities["ServerVersion"] == server.version


async def test_connects_with_auth_file(
    tmp_path: Path, make_server: ServerFactory, sims: Sims
) -> None:
    auth_file = tmp_path / "client-auth.json"
    auth_file.write_text(json.dumps({"fileclient": "file-pass-1", "other": "x-pass"}))
    server = await make_server(server={"auth": None, "auth_file": str(auth_file)})
    sim = await start(sims, sim_config(server, auth="fileclient:file-pass-1"))
    await sim.wait_registered(10)
    result = await connect_once(server, auth="fileclient:wrong")
    assert (result.ok, result.stage) == (False, "auth")


async def test_connects_with_auth_table(
    external_db: TestDatabase, make_server: ServerFactory, sims: Sims
) -> None:
    db = external_db
    await db.create_tables()
    await db.run("INSERT INTO clients_auth VALUES ('dbclient', 'db-pass-1')")
    server = await make_server(
        server={"auth": None, "auth_table": "clients_auth"}, database=db.section
    )
    sim = await start(sims, sim_config(server, auth="dbclient:db-pass-1"))
    await sim.wait_registered(10)
    assert server.clients.registry.get_connected("c1") is not None
    result = await connect_once(server, auth="dbclient:wrong")
    assert (result.ok, result.stage) == (False, "auth")


async def test_auth_table_without_needed_columns_stops_the_server(
    external_db: TestDatabase, make_server: ServerFactory
) -> None:
    await external_db.run("CREATE TABLE clients_auth (name VARCHAR(10), secret VARCHAR(10))")
    from rportd.app import StartupError

    with pytest.raises(StartupError, match="must have columns id and password") as err:
        await make_server(
            server={"auth": None, "auth_table": "clients_auth"}, database=external_db.section
        )
    assert "id" in str(err.value).split("password: ", 1)[1]  # the database's own words


# --- refusals ------------------------------------------------------------------------


async def test_wrong_password_and_unknown_id_fail_auth(server: RportServer, sims: Sims) -> None:
    for auth in (f"{CLIENT_AUTH[0]}:wrong", "nobody:secret-1"):
        result = await connect_once(server, auth=auth)
        assert (result.ok, result.stage) == (False, "auth")
    await assert_healthy(server, sims)


async def test_login_wait_then_ip_ban(make_server: ServerFactory, sims: Sims) -> None:
    server = await make_server(
        server={"client_login_wait": 0.5, "max_failed_login": 3, "ban_time": 60}
    )
    bad = RportClientSim(sim_config(server, auth=f"{CLIENT_AUTH[0]}:wrong"))
    good = RportClientSim(sim_config(server))
    sims.extend((bad, good))
    assert (await bad.connect_once()).stage == "auth"
    # Within client_login_wait even the right password is refused for that auth id.
    assert (await good.connect_once()).stage == "auth"
    await asyncio.sleep(0.6)
    assert (await good.connect_once()).ok
    # Consecutive failures from one IP end in a ban: HTTP 423 at the upgrade.
    for _ in range(3):
        await asyncio.sleep(0.6)
        await bad.connect_once()
    result = await good.connect_once()
    assert (result.stage, result.status) == ("websocket", 423)
    status, _, body = await http_request(client_url(server))
    assert status == 423
    assert body == b"Too many bad attempts. Please try later."


async def test_reused_credential_refused_without_multiuse(
    make_server: ServerFactory, sims: Sims
) -> None:
    server = await make_server(server={"auth_multiuse_creds": False})
    first = await start(sims, sim_config(server, client_id="first"))
    await first.wait_registered(10)
    result = await connect_once(server, client_id="second")
    assert (result.ok, result.stage) == (False, "new_connection")
    assert result.error == f'client auth ID is already in use: "{CLIENT_AUTH[0]}"'
    # Refused even while the first one is disconnected: the credential stays bound.
    await first.stop()
    await asyncio.sleep(0.2)
    result = await connect_once(server, client_id="second")
    assert result.error == f'client auth ID is already in use: "{CLIENT_AUTH[0]}"'


async def test_equate_clientauthid_clientid(make_server: ServerFactory, sims: Sims) -> None:
    server = await make_server(
        server={"auth_multiuse_creds": False, "equate_clientauthid_clientid": True}
    )
    sim = await start(sims, sim_config(server, client_id="", use_system_id=False))
    await sim.wait_registered(10)
    assert server.clients.registry.get_connected(CLIENT_AUTH[0]) is not None


async def test_same_id_connected_twice_is_refused(server: RportServer, sims: Sims) -> None:
    first = await start(sims, sim_config(server, name="web01"))
    await first.wait_registered(10)
    second = RportClientSim(sim_config(server, name="web01"))
    sims.append(second)
    result = await second.connect_once()
    assert result.stage == "new_connection"
    assert result.error == "client is already connected or previous session was not properly closed"
    assert second.has_event("client is already connected: web01 [c1]")
    assert server.clients.registry.get_connected("c1") is not None


async def test_session_resume_replaces_the_stale_connection(
    server: RportServer, sims: Sims
) -> None:
    sim = await start(sims, sim_config(server, session_id="11111111-2222-4333-8444-555555555555"))
    await sim.wait_registered(10)
    old = server.clients.registry.get_connected("c1")
    assert old is not None and old.connection is not None
    old_conn = old.connection
    # The same client process (same SessionID) comes back on a new connection while
    # the server still believes the old one is alive: it is accepted.
    again = RportClientSim(sim_config(server, session_id="11111111-2222-4333-8444-555555555555"))
    sims.append(again)
    result = await again.connect_once(keep_open=True)
    assert result.ok, result.error
    await asyncio.sleep(0.3)
    client = server.clients.registry.get_connected("c1")
    assert client is not None and client.connection is not old_conn
    assert old_conn.closed
    assert client.connected


async def test_oversized_new_connection_is_refused(make_server: ServerFactory, sims: Sims) -> None:
    server = await make_server(server={"max_request_bytes_client": 4000})
    result = await connect_once(server, tags=[f"tag-{i:04d}-" + "x" * 40 for i in range(100)])
    assert result.stage == "new_connection"
    assert result.error.startswith("request data exceeds the limit of 4000 bytes, actual size: ")
    await assert_healthy(server, sims)


async def test_non_rport_requests_get_404(server: RportServer, sims: Sims) -> None:
    url = client_url(server)
    status, _, body = await http_request(url)
    assert (status, body) == (404, b"")
    for protocols in ((), ("chat",), ("rport-v2",)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await open_raw(url, protocols=protocols)
        assert info.value.status == 404
    await assert_healthy(server, sims)


async def test_proxy_serves_non_client_requests(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"intranet page {request.path_qs}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        server = await make_server(server={"proxy": f"http://127.0.0.1:{port}"})
        async with http.get(client_url(server) + "/some/path?q=1") as resp:
            assert resp.status == 200
            assert await resp.text() == "intranet page /some/path?q=1"
    finally:
        await runner.cleanup()


async def test_garbage_instead_of_ssh(server: RportServer, sims: Sims) -> None:
    raw = await open_raw(client_url(server))
    try:
        await raw.read_until(b"\r\n")  # the server's identification line
        await raw.send(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
        await raw.wait_closed(10)
    finally:
        await raw.close()
    await assert_healthy(server, sims)


async def test_client_vanishing_mid_handshake_frees_its_slot(
    make_server: ServerFactory, sims: Sims
) -> None:
    server = await make_server(server={"max_concurrent_ssh_handshakes": 1})
    for _ in range(3):
        raw = await open_raw(client_url(server))
        line = await raw.read_until(b"\r\n")
        assert line.startswith(b"SSH-")
        await raw.send(b"SSH-rport-v1-client\r\n")
        await raw.close(abrupt=True)
    await asyncio.sleep(0.2)
    assert server.listener.connection_count == 0
    await assert_healthy(server, sims)


async def test_first_request_must_be_new_connection(server: RportServer, sims: Sims) -> None:
    sim = RportClientSim(sim_config(server))
    conn = await sim.open_ssh()
    try:
        ok, payload = await conn.request("ping", b"", timeout=5)
        assert not ok
        assert payload == b"expecting connection request"
        await conn.wait_closed(5)
    finally:
        await conn.aclose()
        await sim.stop()
    await assert_healthy(server, sims)


async def test_second_new_connection_on_a_session(server: RportServer, sims: Sims) -> None:
    sim = RportClientSim(sim_config(server))
    sims.append(sim)
    result = await sim.connect_once(keep_open=True)
    assert result.ok and result.connection is not None
    ok, payload = await result.connection.request("new_connection", b"{}", timeout=5)
    assert (ok, payload) == (False, b"unexpected connection request. please reconnect")
    await result.connection.wait_closed(5)
    await asyncio.sleep(0.1)
    client = server.clients.registry.get("c1")
    assert client is not None and not client.connected


# --- runtime --------------------------------------------------------------------------


async def test_disconnect_is_recorded_and_persisted(
    server: RportServer, api: Api, sims: Sims
) -> None:
    sim = await start(sims, sim_config(server))
    await sim.wait_registered(10)
    await sim.stop()
    for _ in range(50):
        if await client_state(api, "c1") == "disconnected":
            break
        await asyncio.sleep(0.05)
    _status, body = await api.get("/clients/c1")
    assert body["data"]["connection_state"] == "disconnected"
    assert body["data"]["disconnected_at"] is not None
    await server.clients.registry.repo.flush()
    db = sqlite3.connect(server.data_dir / "clients.db")
    row = db.execute(
        "SELECT client_auth_id, disconnected_at, details FROM clients WHERE id='c1'"
    ).fetchone()
    db.close()
    assert row[0] == CLIENT_AUTH[0] and row[1] is not None
    assert json.loads(row[2])["hostname"] == "sim-host"


async def test_server_pings_quiet_clients(server: RportServer, sims: Sims) -> None:
    sims_cfg = [
        sim_config(server, client_id="modern"),
        sim_config(server, client_id="double", version="0.9.3", double_ping_reply=True),
    ]
    started = [await start(sims, cfg) for cfg in sims_cfg]
    for sim in started:
        await sim.wait_registered(10)
    for client in server.clients.registry.connected():
        client.last_heartbeat_at = None
    checked = await server.clients.check_connections()
    assert checked == 2
    for client_id in ("modern", "double"):
        found = server.clients.registry.get_connected(client_id)
        assert found is not None and found.last_heartbeat_at is not None
    # The stray second reply of 0.9.3 did not shift later replies off their requests.
    double = server.clients.registry.get_connected("double")
    assert double is not None and double.connection is not None
    result = await double.connection.check_port("127.0.0.1:1", timeout=2)
    assert result.open is False


async def test_client_ping_is_answered_and_counts_as_heartbeat(
    server: RportServer, sims: Sims
) -> None:
    sim = await start(sims, sim_config(server))
    await sim.wait_registered(10)
    client = server.clients.registry.get_connected("c1")
    assert client is not None
    client.last_heartbeat_at = None
    assert await sim.send_ping() == b""
    assert client.last_heartbeat_at is not None


async def test_reports_from_the_client_are_stored(
    server: RportServer, api: Api, sims: Sims
) -> None:
    sim = await start(
        sims,
        sim_config(
            server,
            send_updates_status=True,
            ip_addresses=("203.0.113.7", "2001:db8::7"),
            monitoring_interval=0.2,
        ),
    )
    await sim.wait_registered(10)
    for _ in range(100):
        _status, body = await api.get("/clients/c1")
        data = body["data"]
        if data["updates_status"] and data["ext_ip_addresses"]:
            break
        await asyncio.sleep(0.05)
    assert data["ext_ip_addresses"]["ipv4"] == "203.0.113.7"
    assert data["ext_ip_addresses"]["updated_at"] != "0001-01-01T00:00:00Z"
    assert "updates_available" in data["updates_status"]
    assert server.measurements is not None
    for _ in range(60):
        await server.measurements.flush()
        rows = await server.measurements.db.fetch_all(
            "SELECT client_id, cpu_usage_percent FROM measurements"
        )
        if rows:
            break
        await asyncio.sleep(0.1)
    assert rows and rows[0]["client_id"] == "c1"


async def test_purge_deletes_clients_disconnected_too_long(
    make_server: ServerFactory, api: Api, sims: Sims
) -> None:
    server = await make_server(
        server={
            "purge_disconnected_clients": True,
            "keep_disconnected_clients": "1s",
            "purge_disconnected_clients_interval": "1s",
        }
    )
    sim = await start(sims, sim_config(server))
    await sim.wait_registered(10)
    await sim.stop()
    for _ in range(60):
        if (
            server.clients.registry.get("c1") is None
            and "c1" not in server.clients.registry._clients
        ):
            break
        await asyncio.sleep(0.1)
    assert server.clients.registry.get("c1") is None
    assert "c1" not in server.clients.registry._clients


async def test_fingerprint_file_and_status(server: RportServer, api: Api) -> None:
    text = (server.data_dir / "rportd-fingerprint.txt").read_text().strip()
    assert text == server.fingerprint
    status, body = await api.get("/status")
    assert status == 200
    data = body["data"]
    assert data["fingerprint"] == server.fingerprint
    assert data["version"] == server.version
    assert data["connect_url"] == ["http://127.0.0.1:0"]
    assert data["clients_auth_source"] == "Static Credentials"
    assert data["clients_auth_mode"] == "Read Only"
    assert data["used_ports"] == ["31000-31999"]
    assert data["excluded_ports"] == ["1-1024"]
