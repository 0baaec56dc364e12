"""Schedules replicate to a secondary, which runs them only while it serves the clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from rportd.api.query import FilterOption
from rportd.app import RportServer
from rportd.clients.model import Client
from tests.ha.test_replication import Pair, eventually, pair

__all__ = ["pair"]

BASIC = {"Authorization": aiohttp.encode_basic_auth("admin", "admin-password-123")}


async def call(base: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + "/api/v1" + path, headers=BASIC, **kw) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def runs_on(server: RportServer, schedule_id: str) -> int:
    filters = [FilterOption(("schedule_id",), "eq", (schedule_id,))]
    return await server.jobs.repo.count_multi_jobs(filters)


async def test_schedule_replicates_and_runs_only_on_the_active_primary(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary", takeover_after="1s")

    async def standby() -> bool:
        return secondary.ha is not None and secondary.ha.state == "standby"

    await eventually(standby)
    for node in (primary, secondary):  # known on both: the targets resolve everywhere
        node.clients.registry.adopt(Client(id="web01", client_auth_id="client1"))

    payload = {
        "name": "tick",
        "schedule": "@every 1s",
        "type": "command",
        "client_ids": ["web01"],
        "command": "true",
    }
    status, body = await call(pair.primary_url, "POST", "/schedules", json=payload)
    assert status == 201, body
    created = body["data"]
    schedule_id = created["id"]

    async def replicated() -> bool:
        status, body = await call(pair.secondary_url, "GET", f"/schedules/{schedule_id}")
        return status == 200 and body["data"]["name"] == "tick"

    await eventually(replicated)
    status, body = await call(pair.secondary_url, "GET", f"/schedules/{schedule_id}")
    assert {k: v for k, v in body["data"].items() if k != "last_execution"} == {
        k: v for k, v in created.items() if k != "last_execution"
    }

    async def planned_on_secondary() -> bool:
        return secondary.schedule_runner.next_run(schedule_id) is not None

    await eventually(planned_on_secondary)

    async def ran_twice_on_primary() -> bool:
        return await runs_on(primary, schedule_id) >= 2

    await eventually(ran_twice_on_primary, 10)
    await asyncio.sleep(1.5)
    assert await runs_on(secondary, schedule_id) == 0  # due there too, but not the leader
    status, _ = await call(pair.secondary_url, "DELETE", f"/schedules/{schedule_id}")
    assert status == 403

    # An update replicates too.
    status, body = await call(
        pair.primary_url, "PUT", f"/schedules/{schedule_id}", json={**payload, "name": "tock"}
    )
    assert status == 200, body

    async def renamed() -> bool:
        status, body = await call(pair.secondary_url, "GET", f"/schedules/{schedule_id}")
        return status == 200 and body["data"]["name"] == "tock"

    await eventually(renamed)

    # The primary goes: the secondary takes over its clients, and its schedules too.
    await pair.stop(primary)
    assert secondary.ha is not None

    async def runs_after_takeover() -> bool:
        return await runs_on(secondary, schedule_id) >= 1

    await eventually(runs_after_takeover, 10)
    assert secondary.ha.state == "active" and secondary.ha.role == "secondary"
    status, _ = await call(pair.secondary_url, "DELETE", f"/schedules/{schedule_id}")
    assert status == 403  # still a secondary: the schedule itself is the primary's to change
    await secondary.ha.promote()
    status, _ = await call(pair.secondary_url, "DELETE", f"/schedules/{schedule_id}")
    assert status == 204

    async def forgotten() -> bool:
        return secondary.schedule_runner.next_run(schedule_id) is None

    await eventually(forgotten)
