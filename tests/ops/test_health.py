"""``/healthz`` and ``/readyz``: unauthenticated probes that say why a node is not ready."""

from __future__ import annotations

import sqlite3

import aiohttp

from rportd.app import RportServer
from tests.conftest import Api


def base(server: RportServer) -> str:
    assert server.api_address is not None
    return "http://{}:{}".format(*server.api_address)


async def probe(http: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    async with http.get(url) as resp:  # no credentials: probes have none
        return resp.status, await resp.json()


async def test_probes_answer_without_login(
    server: RportServer, http: aiohttp.ClientSession
) -> None:
    assert await probe(http, base(server) + "/healthz") == (200, {"status": "ok"})
    assert await probe(http, base(server) + "/readyz") == (200, {"status": "ready"})


async def test_not_ready_while_a_database_cannot_be_written(
    server: RportServer, api: Api, http: aiohttp.ClientSession
) -> None:
    # Another process holds library.db locked: writes fail after SQLite's busy timeout.
    locker = sqlite3.connect(server.data_dir / "library.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        status, body = await api.post("/library/commands", json={"name": "up", "cmd": "uptime"})
        assert status == 500, body
        status, ready = await probe(http, base(server) + "/readyz")
        assert status == 503, ready
        assert isinstance(ready, dict) and ready["status"] == "not ready"
        [reason] = ready["reasons"]
        assert reason.startswith("database /") and reason.endswith(
            "/library.db is not writable: database is locked"
        )
        # Still alive: a supervisor must not restart it for this.
        assert await probe(http, base(server) + "/healthz") == (200, {"status": "ok"})
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    status, body = await api.post("/library/commands", json={"name": "up", "cmd": "uptime"})
    assert status == 201, body
    assert await probe(http, base(server) + "/readyz") == (200, {"status": "ready"})
