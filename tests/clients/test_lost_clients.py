"""Upstream's deprecated lost-client keys purge disconnected clients like the new ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp

from rportd.app import RportServer
from tests.clients.test_connect import sim_config
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.simulator import RportClientSim
from tests.tunnels.conftest import eventually


def stored_ids(server: RportServer) -> list[str]:
    path = Path(server.config.server.data_dir) / "clients.db"
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM clients")]


async def test_cleanup_lost_clients_purges_after_keep_lost_clients(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(
        server={
            "cleanup_lost_clients": True,
            "keep_lost_clients": "1s",
            "cleanup_clients_interval": "1s",
        }
    )
    assert server.config.warnings  # each deprecated key is named in a start-up warning
    api = Api(http, api_base(server), ADMIN)
    sim = RportClientSim(sim_config(server, client_id="lost"))
    try:
        await sim.start()
        await sim.wait_registered(10)
    finally:
        await sim.stop()
    status, body = await api.get("/clients/lost")
    assert status == 200 and body["data"]["connection_state"] == "disconnected"
    await eventually(lambda: stored_ids(server) == ["lost"], what="client stored")
    await eventually(lambda: stored_ids(server) == [], timeout=10, what="client purged")
    status, body = await api.get("/clients/lost")
    assert status == 404
