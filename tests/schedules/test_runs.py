"""Schedules run on simulated clients as multi-jobs; overlaps; runs only on the leader."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

from rportd.app import RportServer
from tests.conftest import Api
from tests.jobs.conftest import SimFactory, wait_multi

SUMMARY_SCRIPT = "#!/bin/sh\necho '<summary>tick ok</summary>'\n"


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def runs_of(api: Api, schedule_id: str) -> list[dict[str, Any]]:
    """The schedule's multi-jobs, newest first."""
    status, body = await api.get("/commands", params={"filter[schedule_id]": schedule_id})
    assert status == 200, body
    return list(body["data"])


DEFAULTS = {"name": "tick", "schedule": "@every 1s", "type": "command"}


async def create(api: Api, **fields: Any) -> str:
    payload = {**DEFAULTS, **fields}
    status, body = await api.post("/schedules", json=payload)
    assert status == 201, body
    return str(body["data"]["id"])


async def stop_schedule(api: Api, schedule_id: str, payload: dict[str, Any]) -> None:
    """Move the schedule to a time that does not come during the test."""
    status, body = await api.put(
        f"/schedules/{schedule_id}", json={**DEFAULTS, **payload, "schedule": "0 0 1 1 *"}
    )
    assert status == 200, body


async def test_every_second_runs_on_clients_as_multi_jobs(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    await start_sim("s1")
    await start_sim("s2")
    payload = {
        "name": "tick",
        "schedule": "@every 1s",
        "type": "command",
        "client_ids": ["s1", "s2"],
        "command": "echo tick",
        "execute_concurrently": True,
    }
    schedule_id = await create(api, **payload)

    async def two_runs() -> bool:
        return len(await runs_of(api, schedule_id)) >= 2

    await until(two_runs)
    await stop_schedule(api, schedule_id, payload)
    await asyncio.sleep(1.5)  # a run already due may still start; then nothing more
    runs = await runs_of(api, schedule_id)
    for run in runs:
        multi = await wait_multi(api, run["jid"], 2)
        assert multi["schedule_id"] == schedule_id and multi["created_by"] == "admin"
        assert multi["client_ids"] == ["s1", "s2"] and multi["concurrent"] is True
        assert {j["client_id"] for j in multi["jobs"]} == {"s1", "s2"}
        for job in multi["jobs"]:
            assert job["schedule_id"] == schedule_id and job["status"] == "successful"
            assert job["result"]["stdout"] == "tick\n" and job["created_by"] == "admin"
    await asyncio.sleep(1.5)
    assert len(await runs_of(api, schedule_id)) == len(runs)  # the new time stopped the runs

    status, body = await api.get(
        "/clients/s1/commands", params={"filter[schedule_id]": schedule_id}
    )
    assert body["meta"]["count"] == len(runs)
    status, body = await api.get(f"/schedules/{schedule_id}")
    assert body["data"]["last_execution"] == {
        "started_at": runs[0]["started_at"],
        "client_count": 2,
        "success_count": 2,
        "status": None,  # only shown for a single client
        "summary": None,
    }
    status, listed = await api.get("/schedules")
    assert status == 200
    assert listed["data"]["data"][0]["last_execution"] == body["data"]["last_execution"]


async def test_script_schedule_on_one_client_shows_status_and_summary(
    api: Api, start_sim: SimFactory
) -> None:
    sim = await start_sim("s1", remote_scripts_enabled=True)
    payload = {
        "name": "script tick",
        "schedule": "@every 1s",
        "type": "script",
        "client_ids": ["s1"],
        "script": base64.b64encode(SUMMARY_SCRIPT.encode()).decode(),
        "cwd": "/tmp",
    }
    schedule_id = await create(api, **payload)

    async def ran() -> bool:
        runs = await runs_of(api, schedule_id)
        return bool(runs) and bool((await wait_multi(api, runs[-1]["jid"], 1))["jobs"])

    await until(ran)
    await stop_schedule(api, schedule_id, payload)
    await asyncio.sleep(1.2)
    runs = await runs_of(api, schedule_id)
    multi = await wait_multi(api, runs[0]["jid"], 1)
    job = multi["jobs"][0]
    assert job["is_script"] is True and job["command"] == SUMMARY_SCRIPT and job["cwd"] == "/tmp"
    assert sim.jobs_run[-1]["is_script"] is True
    status, body = await api.get(f"/schedules/{schedule_id}")
    assert status == 200
    assert body["data"]["last_execution"] == {
        "started_at": runs[0]["started_at"],
        "client_count": 1,
        "success_count": 1,
        "status": "successful",
        "summary": "tick ok",
    }


async def _first_run_while_busy(api: Api, schedule_id: str) -> tuple[str, list[int]]:
    """Wait for the first run; count the schedule's runs while its job is running."""

    async def started() -> bool:
        return bool(await runs_of(api, schedule_id))

    await until(started)
    first = (await runs_of(api, schedule_id))[-1]["jid"]
    counts: list[int] = []
    while True:
        multi = (await api.get(f"/commands/{first}"))[1]["data"]
        if multi["jobs"] and multi["jobs"][0]["status"] != "running":
            return first, counts
        counts.append(len(await runs_of(api, schedule_id)))
        await asyncio.sleep(0.1)


async def test_overlaps_false_skips_while_a_run_is_in_progress(
    api: Api, start_sim: SimFactory
) -> None:
    await start_sim("s1")
    payload = {"client_ids": ["s1"], "command": "sleep 3", "overlaps": False}
    schedule_id = await create(api, **payload)
    _, counts = await _first_run_while_busy(api, schedule_id)
    assert len(counts) > 10 and set(counts) == {1}  # ~3 s of ticks, no second run

    async def next_run_started() -> bool:
        return len(await runs_of(api, schedule_id)) >= 2

    await until(next_run_started, 5)  # once the first run has ended, the next one comes
    await stop_schedule(api, schedule_id, payload)


async def test_overlaps_true_starts_runs_while_one_is_in_progress(
    api: Api, start_sim: SimFactory
) -> None:
    await start_sim("s1")
    payload = {"client_ids": ["s1"], "command": "sleep 3", "overlaps": True}
    schedule_id = await create(api, **payload)
    _, counts = await _first_run_while_busy(api, schedule_id)
    assert max(counts) >= 2
    await stop_schedule(api, schedule_id, payload)


async def test_runs_only_while_the_node_is_the_leader(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    await start_sim("s1")
    leader = False
    server.schedule_runner.is_leader = lambda: leader
    payload = {"client_ids": ["s1"], "command": "true"}
    schedule_id = await create(api, **payload)
    await asyncio.sleep(2.5)
    assert await runs_of(api, schedule_id) == []
    leader = True  # checked at every due time: the next tick runs

    async def ran() -> bool:
        return bool(await runs_of(api, schedule_id))

    await until(ran, 5)
    await stop_schedule(api, schedule_id, payload)
