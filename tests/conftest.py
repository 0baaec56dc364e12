"""Shared fixtures: a real rportd on 127.0.0.1 ephemeral ports, and an API client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from rportd.app import RportServer
from rportd.config import load_config
from tests.dbservers import (
    ENGINES,
    DbServer,
    MariaDbServer,
    PostgresServer,
    TestDatabase,
    fresh_database,
)

KEY_SEED = "test-key-seed"
ADMIN = ("admin", "admin-password-123")
CLIENT_AUTH = ("client1", "secret-1")


def server_config(tmp_path: Path, **sections: dict[str, Any]) -> Any:
    """A config for a test server: defaults below, overridden per section."""
    overrides: dict[str, dict[str, Any]] = {
        "server": {
            "address": "127.0.0.1:0",
            "data_dir": str(tmp_path / "data"),
            "key_seed": KEY_SEED,
            "auth": ":".join(CLIENT_AUTH),
            "used_ports": ["31000-31999"],
            "allow_root": True,
        },
        "api": {
            "address": "127.0.0.1:0",
            "auth": ":".join(ADMIN),
            "jwt_secret": "test-jwt-secret",
            "user_login_wait": 0,
        },
        "logging": {"log_level": "debug"},
    }
    for section, values in sections.items():
        base = overrides.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
    return load_config(None, overrides, search_cwd=False)


class Api:
    """A tiny API client returning ``(status, parsed JSON or text)``."""

    def __init__(self, session: aiohttp.ClientSession, base: str, auth: tuple[str, str] | None):
        self.session = session
        self.base = base
        self.headers: dict[str, str] = (
            {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}
        )

    def as_user(self, username: str, password: str) -> Api:
        return Api(self.session, self.base, (username, password))

    def with_token(self, token: str) -> Api:
        api = Api(self.session, self.base, None)
        api.headers = {"Authorization": f"Bearer {token}"}
        return api

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)


ServerFactory = Callable[..., Awaitable[RportServer]]
DbServerT = TypeVar("DbServerT", MariaDbServer, PostgresServer)


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers (each with its own data dir); all are stopped at the end."""
    started: list[RportServer] = []

    async def factory(name: str = "node", **sections: dict[str, Any]) -> RportServer:
        server = RportServer(server_config(tmp_path / name, **sections))
        await server.start()
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> RportServer:
    return await make_server()


def client_url(server: RportServer) -> str:
    assert server.client_address is not None
    return "http://{}:{}".format(*server.client_address)


def api_base(server: RportServer) -> str:
    assert server.api_address is not None
    return "http://{}:{}/api/v1".format(*server.api_address)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server: RportServer, http: aiohttp.ClientSession) -> Api:
    return Api(http, api_base(server), ADMIN)


# --- external databases ([database]): real MariaDB and PostgreSQL servers ---------------


def _running(server: DbServerT) -> Iterator[DbServerT]:
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDbServer]:
    """One MariaDB server for the session."""
    yield from _running(MariaDbServer())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session."""
    yield from _running(PostgresServer())


def db_server(request: pytest.FixtureRequest, engine: str) -> DbServer | None:
    """The session's server for ``engine`` (started on first use; none for SQLite)."""
    if engine == "sqlite":
        return None
    server: DbServer = request.getfixturevalue("mariadb" if engine == "mysql" else "postgres")
    return server


@pytest.fixture(params=ENGINES)
async def external_db(request: pytest.FixtureRequest, tmp_path: Path) -> TestDatabase:
    """A fresh, empty ``[database]`` of each engine: SQLite, MariaDB, PostgreSQL."""
    engine = str(request.param)
    return await fresh_database(engine, db_server(request, engine), tmp_path)


@pytest.fixture(params=ENGINES[1:])
async def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> TestDatabase:
    """A fresh, empty database on each server engine: MariaDB, PostgreSQL."""
    engine = str(request.param)
    return await fresh_database(engine, db_server(request, engine), tmp_path)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)
