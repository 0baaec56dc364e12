"""Fixtures for access-management tests: user files, user DBs and simulated clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from rportd.app import RportServer
from tests.conftest import Api, ServerFactory, api_base, client_url
from tests.dbservers import TestDatabase
from tests.simulator import RportClientSim, SimulatorConfig

ADMIN_PW = "admin-password-123"
BOB_PW = "bob-password-12345"
CAROL_PW = "carol-password-1234"


def y_hash(password: str) -> str:
    """A ``$2y$`` bcrypt hash (cheap cost: tests only)."""
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()[4:]


def write_users_file(path: Path, users: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(users))
    return path


def default_users_file(path: Path) -> Path:
    return write_users_file(
        path,
        [
            {"username": "admin", "password": y_hash(ADMIN_PW), "groups": ["Administrators"]},
            {"username": "bob", "password": y_hash(BOB_PW), "groups": ["Users"]},
        ],
    )


async def make_users_db(
    db: TestDatabase,
    users: list[tuple[str, str, list[str]]],
    details: dict[str, dict[str, bool]] | None = None,
    *,
    clients_auth: dict[str, str] | None = None,
) -> TestDatabase:
    """``db`` with the tables deploy/external-db/ documents, and these rows."""
    await db.create_tables()
    for name, password, groups in users:
        await db.run(
            "INSERT INTO users (username, password) VALUES (?, ?)", (name, y_hash(password))
        )
        for group in groups:
            await db.run(
                f"INSERT INTO {db.q('groups')} (username, {db.q('group')}) VALUES (?, ?)",
                (name, group),
            )
    for name, perms in (details or {}).items():
        await db.run(
            "INSERT INTO group_details (name, permissions) VALUES (?, ?)", (name, json.dumps(perms))
        )
    for auth_id, password in (clients_auth or {}).items():
        await db.run("INSERT INTO clients_auth (id, password) VALUES (?, ?)", (auth_id, password))
    return db


def db_sections(db: TestDatabase, **api: Any) -> dict[str, dict[str, Any]]:
    """Server config sections for API users in ``db``."""
    return {
        "database": db.section,
        "api": {
            "auth": None,
            "auth_user_table": "users",
            "auth_group_table": "groups",
            "auth_group_details_table": "group_details",
            **api,
        },
    }


def api_for(server: RportServer, http: aiohttp.ClientSession, user: str, pw: str) -> Api:
    return Api(http, api_base(server), (user, pw))


def sim_config(server: RportServer, auth: str, client_id: str, **kwargs: Any) -> SimulatorConfig:
    kwargs.setdefault("connect_jitter", 0.0)
    kwargs.setdefault("backoff_min", 0.2)
    kwargs.setdefault("backoff_max", 1.0)
    return SimulatorConfig(server=client_url(server), auth=auth, client_id=client_id, **kwargs)


@pytest.fixture
async def sims() -> AsyncIterator[list[RportClientSim]]:
    """Simulators started by a test; all stopped at the end."""
    running: list[RportClientSim] = []
    yield running
    for sim in running:
        await sim.stop()


async def start_sim(sims: list[RportClientSim], config: SimulatorConfig) -> RportClientSim:
    sim = RportClientSim(config)
    sims.append(sim)
    await sim.start()
    await sim.wait_registered(10)
    return sim


@pytest.fixture
async def file_server(tmp_path: Path, make_server: ServerFactory) -> RportServer:
    """Users from a JSON file (admin, bob in Users), clients from a JSON file."""
    users = default_users_file(tmp_path / "api-auth.json")
    clients = tmp_path / "clients-auth.json"
    clients.write_text(json.dumps({"client1": "secret-1"}))
    return await make_server(
        server={"auth": None, "auth_file": str(clients)},
        api={"auth": None, "auth_file": str(users)},
    )


@pytest.fixture
def admin(file_server: RportServer, http: aiohttp.ClientSession) -> Api:
    return api_for(file_server, http, "admin", ADMIN_PW)


@pytest.fixture
def bob(file_server: RportServer, http: aiohttp.ClientSession) -> Api:
    return api_for(file_server, http, "bob", BOB_PW)
