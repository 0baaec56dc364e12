"""``[database]`` on a MariaDB or PostgreSQL server: outages, wrong password, missing tables.

Each fault is met with a clear error naming the database; the server keeps running
and recovers once the database is back, without a restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from rportd.app import RportServer, StartupError
from rportd.config import DatabaseConfig
from rportd.store import external
from tests import dbservers
from tests.access.conftest import ADMIN_PW, api_for, db_sections, make_users_db, sim_config
from tests.conftest import ServerFactory
from tests.dbservers import MariaDbServer, TcpGate, TestDatabase
from tests.simulator import RportClientSim


async def _db_server(db: TestDatabase, make_server: ServerFactory, **database: Any) -> RportServer:
    """Client credentials and API users both in ``db``."""
    sections = db_sections(db)
    sections["database"].update(database)
    return await make_server(server={"auth": None, "auth_table": "clients_auth"}, **sections)


async def _filled(db: TestDatabase) -> TestDatabase:
    return await make_users_db(
        db, [("admin", ADMIN_PW, ["Administrators"])], clients_auth={"client1": "secret-1"}
    )


@pytest.fixture
async def running_db(server_db: TestDatabase) -> AsyncIterator[TestDatabase]:
    """``server_db``, whose server is running again after the test whatever happened."""
    yield server_db
    server = server_db.server
    assert server is not None
    if server.process is None or server.process.poll() is not None:
        server.start()


def _names_database(body: Any, db: TestDatabase) -> str:
    title = str(body["errors"][0]["title"])
    assert title.startswith(f'{db.engine} database "{db.name}" at 127.0.0.1:'), title
    return title


async def test_database_restart_mid_run(
    running_db: TestDatabase,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    sims: list[RportClientSim],
) -> None:
    db = await _filled(running_db)
    server = await _db_server(db, make_server)
    admin = api_for(server, http, "admin", ADMIN_PW)
    assert (await admin.get("/users"))[0] == 200
    assert db.server is not None

    db.server.stop()  # in this thread: the server dies with the thread that started it
    status, body = await admin.get("/users")
    assert status == 503
    assert "is unavailable" in _names_database(body, db)
    status, body = await admin.post("/clients-auth", json={"id": "during", "password": "pw-1"})
    assert status == 503
    # A client cannot be checked now: refused, but not counted as a failed login.
    sim = RportClientSim(sim_config(server, "client1:secret-1", "c1", backoff_max=0.5))
    sims.append(sim)
    await sim.start()
    await sim.wait_event("Retrying in", 10)
    assert not sim.registered
    assert not server.clients.ip_ban.is_banned("127.0.0.1")

    db.server.start()
    await sim.wait_registered(15)
    assert (await admin.get("/users"))[0] == 200
    status, _ = await admin.post("/clients-auth", json={"id": "after", "password": "pw-2"})
    assert status == 201
    assert await db.run("SELECT id FROM clients_auth ORDER BY id") == [("after",), ("client1",)]


async def test_wrong_password_then_fixed(
    server_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    db = await _filled(server_db)
    assert db.server is not None
    user = f"u_{uuid.uuid4().hex[:8]}"
    await db.server.create_user(user, "the-right-one", db.name)
    # The server starts (the database may just be slow to come up) and says what is wrong.
    server = await _db_server(db, make_server, db_user=user, db_password="a-wrong-one")
    admin = api_for(server, http, "admin", ADMIN_PW)
    status, body = await admin.get("/users")
    assert status == 503
    title = _names_database(body, db)
    assert ("Access denied for user" in title) or ("password authentication failed" in title)
    assert "a-wrong-one" not in title

    await db.server.set_password(user, "a-wrong-one")  # the DBA fixes it on their side
    assert (await admin.get("/users"))[0] == 200


async def test_table_dropped_and_created_again(
    server_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    db = await _filled(server_db)
    server = await _db_server(db, make_server)
    admin = api_for(server, http, "admin", ADMIN_PW)
    await db.run("DROP TABLE clients_auth")
    status, body = await admin.get("/clients-auth")
    assert status == 500
    title = _names_database(body, db)
    assert "clients_auth" in title and "SELECT" not in title
    await db.run("CREATE TABLE clients_auth (id varchar(100) PRIMARY KEY, password varchar(100))")
    assert await admin.post("/clients-auth", json={"id": "back", "password": "pw-3"}) == (
        201,
        None,
    )
    status, body = await admin.get("/clients-auth")
    assert [c["id"] for c in body["data"]] == ["back"]


async def test_missing_users_table_stops_the_server(
    external_db: TestDatabase, make_server: ServerFactory
) -> None:
    await external_db.run("CREATE TABLE clients_auth (id varchar(100), password varchar(100))")
    with pytest.raises(StartupError, match="cannot load API users: ") as err:
        await _db_server(external_db, make_server)
    assert "users" in str(err.value)


async def test_unreachable_host_then_reachable(
    server_db: TestDatabase,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(external, "CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(external, "OPERATION_TIMEOUT", 1.0)
    db = await _filled(server_db)
    assert db.server is not None
    gate = TcpGate(db.server.port)
    await gate.start()
    try:
        server = await _db_server(db, make_server, db_host=f"127.0.0.1:{gate.port}")
        admin = api_for(server, http, "admin", ADMIN_PW)
        started = asyncio.get_running_loop().time()
        status, body = await admin.get("/users")
        assert status == 503
        assert asyncio.get_running_loop().time() - started < 5
        title = _names_database(body, db)
        assert "did not answer within 1s" in title or "is unavailable" in title

        gate.let_through()
        status, body = await admin.get("/users")
        assert status == 200 and [u["username"] for u in body["data"]] == ["admin"]
    finally:
        await gate.stop()


async def test_socket_db_host(
    server_db: TestDatabase,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """``db_host = "socket:/path"``: MariaDB's socket file, PostgreSQL's socket directory."""
    db = await _filled(server_db)
    server_proc = db.server
    if isinstance(server_proc, MariaDbServer):
        path = server_proc.socket
    else:
        assert server_proc is not None
        path = f"{server_proc.socket_dir}/.s.PGSQL.{server_proc.port}"
    server = await _db_server(db, make_server, db_host=f"socket:{path}")
    status, body = await api_for(server, http, "admin", ADMIN_PW).get("/clients-auth")
    assert status == 200 and [c["id"] for c in body["data"]] == ["client1"]
    if db.engine == "postgres":  # the socket's directory, libpq style, on the default port
        default = tmp_path / "run-postgresql"
        default.mkdir()
        (default / ".s.PGSQL.5432").symlink_to(path)
        config = DatabaseConfig(**{**db.section, "db_host": f"socket:{default}"})
        direct = external.ServerDatabase(config)
        try:
            await direct.open()
            assert await direct.fetch_all("SELECT id FROM clients_auth") == [{"id": "client1"}]
        finally:
            await direct.close()


def test_missing_server_binary_fails_naming_the_setup_script(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"tests/setup/system-packages\.sh"):
        dbservers._need(tmp_path / "mariadbd")


async def test_read_only_database_refuses_writes_with_503(
    server_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """A database that turned read-only (a replica, a hot standby): reads work, writes 503."""
    db = await _filled(server_db)
    assert db.server is not None
    server = await _db_server(db, make_server)
    admin = api_for(server, http, "admin", ADMIN_PW)
    if db.engine == "mysql":
        await db.server.run("SET GLOBAL read_only = 1")
    else:
        await db.server.run(f'ALTER DATABASE "{db.name}" SET default_transaction_read_only = on')
        # Sessions opened from now on are read-only: end rportd's (it reconnects).
        await db.server.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?", [db.name]
        )
    try:
        status, body = await admin.post("/clients-auth", json={"id": "new1", "password": "pw-new1"})
        assert status == 503
        assert "only takes reads now" in _names_database(body, db)
        assert (await admin.get("/clients-auth"))[0] == 200
    finally:
        if db.engine == "mysql":
            await db.server.run("SET GLOBAL read_only = 0")
    assert await db.run("SELECT id FROM clients_auth") == [("client1",)]


async def test_totp_secret_kept_in_the_users_table(
    external_db: TestDatabase, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """With TOTP on, the key lives in ``totp_secret`` of each engine's users table."""
    db = await make_users_db(external_db, [("admin", ADMIN_PW, ["Administrators"])])
    server = await make_server(**db_sections(db, totp_enabled=True))
    anonymous = api_for(server, http, "", "").with_token("")
    status, body = await anonymous.post("/login", json={"username": "admin", "password": ADMIN_PW})
    assert status == 200 and body["data"]["two_fa"]["totp_key_status"] == "pending"
    pending = anonymous.with_token(body["data"]["token"])
    status, secret = await pending.post("/me/totp-secret")
    assert status == 200
    [(stored,)] = await db.run("SELECT totp_secret FROM users WHERE username = 'admin'")
    assert stored.startswith("otpauth://totp/") and f"secret={secret['secret']}" in stored
    code = pyotp.TOTP(secret["secret"]).now()
    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": code})
    assert status == 200
    assert (await anonymous.with_token(body["data"]["token"]).get("/me"))[0] == 200
