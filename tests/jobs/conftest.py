"""Helpers for job tests: simulated clients on a real server, and waiting for job results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rportd.app import RportServer
from tests.conftest import CLIENT_AUTH, Api, client_url
from tests.simulator import RportClientSim, SimulatorConfig

SimFactory = Callable[..., Awaitable[RportClientSim]]


@pytest.fixture
async def sims() -> AsyncIterator[list[RportClientSim]]:
    started: list[RportClientSim] = []
    yield started
    await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)


def sim_config(server: RportServer, client_id: str, **overrides: Any) -> SimulatorConfig:
    """A registered-at-once client that may run any command (``allow = ['.*']``)."""
    base: dict[str, Any] = {
        "server": client_url(server),
        "auth": ":".join(CLIENT_AUTH),
        "client_id": client_id,
        "name": f"name-{client_id}",
        "connect_jitter": 0,
        "keep_alive": 0,
        "monitoring_enabled": False,
        "commands_allow": [".*"],
        "commands_deny": [],
        "backoff_min": 0.2,
        "backoff_max": 1.0,
    }
    base.update(overrides)
    return SimulatorConfig(**base)


@pytest.fixture
def start_sim(server: RportServer, sims: list[RportClientSim]) -> SimFactory:
    async def start(client_id: str = "c1", **overrides: Any) -> RportClientSim:
        sim = RportClientSim(sim_config(server, client_id, **overrides))
        sims.append(sim)
        await sim.start()
        await sim.wait_registered(10)
        for _ in range(200):
            if server.clients.registry.get_connected(client_id) is not None:
                break
            await asyncio.sleep(0.01)
        return sim

    return start


async def wait_job(
    api: Api, client_id: str, jid: str, timeout: float = 15.0, *, until: str = "running"
) -> dict[str, Any]:
    """Poll a job until its status is no longer ``until``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await api.get(f"/clients/{client_id}/commands/{jid}")
        if status == 200 and body["data"]["status"] != until:
            return dict(body["data"])
        if loop.time() > deadline:
            raise AssertionError(f"job {jid} still {until}: {status} {body}")
        await asyncio.sleep(0.05)


async def wait_multi(
    api: Api, jid: str, count: int, timeout: float = 30.0, *, settled: bool = True
) -> dict[str, Any]:
    """Poll a multi-client job until ``count`` child jobs exist (and none is running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await api.get(f"/commands/{jid}")
        assert status == 200, body
        jobs = body["data"]["jobs"]
        done = len(jobs) >= count and (not settled or all(j["status"] != "running" for j in jobs))
        if done:
            return dict(body["data"])
        if loop.time() > deadline:
            raise AssertionError(f"multi-job {jid}: {len(jobs)} jobs: {jobs}")
        await asyncio.sleep(0.05)
