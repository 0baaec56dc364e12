"""Real MariaDB and PostgreSQL servers for the tests, and a fresh database per test.

Each server runs from Debian's packages (installed by tests/setup/system-packages.sh)
in a temporary data directory, on a free TCP port and a unix socket, and dies with
the test session. PostgreSQL refuses to run as root: as root it runs as ``postgres``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import pytest

from tests.ha.cluster import free_port

REPO = Path(__file__).resolve().parents[1]
DDL_DIR = REPO / "deploy" / "external-db"
SETUP_SCRIPT = "tests/setup/system-packages.sh"
MARIADB_BIN = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL = Path("/usr/bin/mariadb-install-db")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_USER = "rport"
DB_PASSWORD = "rport-db-password"
ENGINES = ("sqlite", "mysql", "postgres")


def _need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: install the test servers with `sudo sh {SETUP_SCRIPT}`",
            pytrace=False,
        )


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the thread that started it ends (start from the main one)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _as_user(name: str | None) -> Callable[[], None]:
    def preexec() -> None:
        if name is not None:
            entry = pwd.getpwnam(name)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        _die_with_parent()

    return preexec


def _wait_ready(
    port: int, process: subprocess.Popen[bytes], log: Path, offset: int, ready: bytes
) -> None:
    """Wait until the server logged ``ready`` (after ``offset``) and takes TCP connections."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        with log.open("rb") as f:
            f.seek(offset)
            logged = ready in f.read()
        if logged:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    process.kill()
    pytest.fail(f"database server on port {port} did not start:\n{tail}", pytrace=False)


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _stop(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class MariaDbServer:
    """``mariadbd`` on a free port and a socket, root reachable through the socket."""

    engine = "mysql"

    def __init__(self) -> None:
        _need(MARIADB_BIN, MARIADB_INSTALL)
        self.root = Path(tempfile.mkdtemp(prefix="rportd-mariadb-"))
        self.datadir = self.root / "data"
        self.socket = str(self.root / "mysqld.sock")
        self.log = self.root / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                str(MARIADB_INSTALL),
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *user,
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        user = ["--user=root"] if os.geteuid() == 0 else []
        offset = _log_size(self.log)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(MARIADB_BIN),
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--socket={self.socket}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--pid-file={self.root / 'mysqld.pid'}",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-flush-log-at-trx-commit=0",
                    *user,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        _wait_ready(self.port, self.process, self.log, offset, b"ready for connections")

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def run(self, sql: str, params: Sequence[Any] = (), database: str = "") -> list[Any]:
        """Run one statement as root (``?`` placeholders); its rows."""
        conn = await asyncmy.connect(
            unix_socket=self.socket, user="root", password="", db=database or None
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql.replace("?", "%s"), tuple(params) or None)
                rows = await cur.fetchall()
            await conn.commit()
            return [tuple(r) for r in rows or ()]
        finally:
            conn.close()

    async def create_database(self, name: str) -> None:
        await self.run(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        await self.run(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}'")
        await self.run(f"GRANT ALL ON `{name}`.* TO '{DB_USER}'@'%'")

    async def create_user(self, name: str, password: str, database: str) -> None:
        await self.run(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
        await self.run(f"GRANT ALL ON `{database}`.* TO '{name}'@'%'")

    async def set_password(self, name: str, password: str) -> None:
        await self.run(f"ALTER USER '{name}'@'%' IDENTIFIED BY '{password}'")


class PostgresServer:
    """``postgres`` on a free port and a socket; the ``postgres`` role trusted on the socket."""

    engine = "postgres"

    def __init__(self) -> None:
        _need(PG_BIN / "initdb", PG_BIN / "postgres")
        self.user = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="rportd-postgres-"))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.datadir = self.root / "data"
        self.socket_dir = str(self.root)
        self.log = self.root / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            preexec_fn=_as_user(self.user),
            cwd=self.root,
        )

    def start(self) -> None:
        offset = _log_size(self.log)
        log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.process = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-k",
                    self.socket_dir,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_as_user(self.user),
                cwd=self.root,
            )
        finally:
            os.close(log)
        _wait_ready(self.port, self.process, self.log, offset, b"ready to accept connections")

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # "fast" shutdown

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def run(self, sql: str, params: Sequence[Any] = (), database: str = "") -> list[Any]:
        """Run one statement (``?`` placeholders); its rows.

        In ``database`` as its owner (the socket trusts every role), else as ``postgres``.
        """
        parts = sql.split("?")
        numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        conn = await asyncpg.connect(
            host=self.socket_dir,
            port=self.port,
            user=DB_USER if database else "postgres",
            database=database or "postgres",
        )
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()

    async def create_database(self, name: str) -> None:
        if not await self.run("SELECT 1 FROM pg_roles WHERE rolname = ?", [DB_USER]):
            await self.run(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
        await self.run(f'CREATE DATABASE "{name}" OWNER {DB_USER}')

    async def create_user(self, name: str, password: str, database: str) -> None:
        await self.run(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        await self.run(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"', database=database)

    async def set_password(self, name: str, password: str) -> None:
        await self.run(f"ALTER ROLE {name} PASSWORD '{password}'")


DbServer = MariaDbServer | PostgresServer


@dataclass
class TestDatabase:
    """A fresh database of one engine for one test, and the ``[database]`` section for it."""

    __test__ = False  # not a test class

    engine: str
    name: str
    server: DbServer | None = None
    host: str = ""
    user: str = DB_USER
    password: str = DB_PASSWORD
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def section(self) -> dict[str, str]:
        """``[database]`` for rportd."""
        if self.server is None:
            return {"db_type": "sqlite", "db_name": self.name}
        host = self.host or f"127.0.0.1:{self.server.port}"
        return {
            "db_type": self.engine,
            "db_host": host,
            "db_user": self.user,
            "db_password": self.password,
            "db_name": self.name,
        }

    def q(self, identifier: str) -> str:
        """``identifier`` quoted for this engine."""
        return f"`{identifier}`" if self.engine == "mysql" else f'"{identifier}"'

    async def run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement in this database (``?`` placeholders); its rows."""
        if self.server is None:
            con = sqlite3.connect(self.name)
            try:
                rows = con.execute(sql, tuple(params)).fetchall()
                con.commit()
                return rows
            finally:
                con.close()
        return await self.server.run(sql, params, database=self.name)

    async def create_tables(self) -> None:
        """The tables as deploy/external-db/<engine>.sql creates them."""
        ddl = (DDL_DIR / f"{self.engine}.sql").read_text()
        lines = [line for line in ddl.splitlines() if not line.startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                await self.run(statement)


def sqlite_database(tmp_path: Path) -> TestDatabase:
    """A new SQLite file in ``tmp_path``."""
    return TestDatabase("sqlite", str(tmp_path / f"auth-{uuid.uuid4().hex[:8]}.db"))


async def fresh_database(engine: str, server: DbServer | None, tmp_path: Path) -> TestDatabase:
    """A new empty database on ``server`` (a SQLite file in ``tmp_path`` for ``sqlite``)."""
    if server is None:
        return sqlite_database(tmp_path)
    name = f"t_{uuid.uuid4().hex[:12]}"
    await server.create_database(name)
    return TestDatabase(engine, name, server)


class TcpGate:
    """A TCP port in front of a database server: silent (a host that never answers) or open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.open = False
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def let_through(self) -> None:
        """Forward new connections to the server (silent ones held so far are dropped)."""
        self.open = True
        for writer in self._held:
            writer.close()
        self._held.clear()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            self._held.add(writer)  # accepted by the kernel, never answered
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._held:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.close()
