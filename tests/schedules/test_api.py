"""``/schedules`` CRUD, validation, list queries, permissions; an upstream jobs.db."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from rportd.app import RportServer
from rportd.clients.model import Client
from tests.access.conftest import db_sections, make_users_db
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.dbservers import sqlite_database
from tests.jobs.test_upstream_jobs_db import UPSTREAM_SCHEMA, job_details

KEYS = [
    "id",
    "created_at",
    "created_by",
    "name",
    "schedule",
    "type",
    "client_ids",
    "group_ids",
    "tags",
    "command",
    "interpreter",
    "cwd",
    "is_sudo",
    "timeout_sec",
    "execute_concurrently",
    "abort_on_error",
    "overlaps",
    "last_execution",
]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def adopt(server: RportServer, *ids: str) -> None:
    for client_id in ids:
        server.clients.registry.adopt(Client(id=client_id, client_auth_id="client1"))


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "nightly uptime",
        "schedule": "0 3 * * *",
        "type": "command",
        "client_ids": ["web01"],
        "command": "uptime",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def error(resp: Any) -> tuple[str, str]:
    item = resp["errors"][0]
    return item["title"], item["detail"]


async def test_crud(api: Api, server: RportServer) -> None:
    adopt(server, "web01", "web02")
    status, created = await api.post("/schedules", json=body(timeout_sec=30, overlaps=True))
    assert status == 201, created
    data = created["data"]
    assert list(data) == KEYS
    assert data["created_by"] == ADMIN[0] and data["last_execution"] is None
    assert data["abort_on_error"] is None and data["tags"] is None and data["group_ids"] is None
    assert (data["timeout_sec"], data["overlaps"], data["execute_concurrently"]) == (
        30,
        True,
        False,
    )
    schedule_id = data["id"]
    await eventually(lambda: server.schedule_runner.next_run(schedule_id) is not None)

    status, got = await api.get(f"/schedules/{schedule_id}")
    assert status == 200 and got["data"] == data

    status, updated = await api.put(
        f"/schedules/{schedule_id}",
        json=body(
            name="renamed",
            schedule="@every 1h",
            client_ids=["web01", "web02"],
            abort_on_error=False,
            created_by="mallory",
            created_at="2001-01-01T00:00:00Z",
            id="ignored",
        ),
    )
    assert status == 200, updated
    new = updated["data"]
    assert (new["id"], new["created_at"], new["created_by"]) == (
        schedule_id,
        data["created_at"],
        ADMIN[0],
    )
    assert (new["name"], new["schedule"], new["abort_on_error"]) == ("renamed", "@every 1h", False)
    assert new["client_ids"] == ["web01", "web02"] and new["overlaps"] is False

    status, listed = await api.get("/schedules")
    assert status == 200
    assert listed == {"data": {"data": [new], "meta": {"count": 1}}}  # wrapped twice, as upstream

    status, _ = await api.delete(f"/schedules/{schedule_id}")
    assert status == 204
    await eventually(lambda: server.schedule_runner.next_run(schedule_id) is None)
    status, resp = await api.get(f"/schedules/{schedule_id}")
    assert (status, error(resp)) == (
        404,
        (f"Cannot find a schedule by the provided id: {schedule_id}", ""),
    )
    status, resp = await api.delete(f"/schedules/{schedule_id}")
    assert (status, error(resp)[0]) == (404, f"cannot find entry by id {schedule_id}")
    status, resp = await api.put(f"/schedules/{schedule_id}", json=body())
    assert (status, error(resp)[0]) == (
        404,
        f"Cannot find a schedule by the provided id: {schedule_id}",
    )


async def test_script_schedule_keeps_base64(api: Api, server: RportServer) -> None:
    adopt(server, "web01")
    script = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    status, created = await api.post(
        "/schedules",
        json=body(type="script", command=..., script=script, interpreter="/bin/bash"),
    )
    assert status == 201, created
    data = created["data"]
    assert "command" not in data and data["script"] == script
    assert data["interpreter"] == "/bin/bash"


async def test_validation_errors(api: Api, server: RportServer) -> None:
    adopt(server, "web01")
    cases: list[tuple[dict[str, Any] | str, int, tuple[str, str]]] = [
        ("", 400, ("Missing body with json data.", "")),
        (
            body(extra=1),
            400,
            ("Invalid JSON data.", 'json: unknown field "extra"'),
        ),
        (
            body(overlaps="yes"),
            400,
            (
                "Invalid JSON data.",
                "json: cannot unmarshal string into Go struct field Schedule.overlaps of type bool",
            ),
        ),
        (
            body(client_ids=...),
            400,
            (
                "Missing targeting parameters.",
                "please specify targeting options, such as client ids, groups ids or tags",
            ),
        ),
        (body(client_ids=["nope"]), 404, ('Client with id="nope" not found.', "")),
        (body(type="cron"), 400, ("Invalid type.", "type must be 'command' or 'script'")),
        (
            body(schedule="61 * * * *"),
            400,
            ("Invalid schedule.", "end of range (61) above maximum (59): 61"),
        ),
        (body(schedule=""), 400, ("Invalid schedule.", "empty spec string")),
        (
            body(schedule="@every 5"),
            400,
            (
                "Invalid schedule.",
                'failed to parse duration @every 5: time: missing unit in duration "5"',
            ),
        ),
        (
            body(interpreter="bash"),
            400,
            (
                "Invalid interpreter.",
                "expected interpreter to be one of: [cmd powershell tacoscript], actual: bash",
            ),
        ),
        (body(command=""), 400, ("Empty command.", "command cannot be empty")),
        (body(type="script", command=...), 400, ("Empty script.", "script cannot be empty")),
        (
            body(type="script", command=..., script="not base64!"),
            400,
            ("Invalid script.", "illegal base64 data at input byte 3"),
        ),
    ]
    for payload, status, expected in cases:
        kwargs: dict[str, Any] = (
            {"data": payload} if isinstance(payload, str) else {"json": payload}
        )
        got_status, resp = await api.post("/schedules", **kwargs)
        assert (got_status, error(resp)) == (status, expected), payload
    status, listed = await api.get("/schedules")
    assert listed["data"]["meta"]["count"] == 0  # nothing was stored


async def test_list_queries(api: Api, server: RportServer) -> None:
    adopt(server, "web01", "web02", "db01")
    for name, kind, clients in [
        ("alpha", "command", ["web01"]),
        ("Bravo", "script", ["web02", "db01"]),
        ("charlie", "command", ["db01"]),
    ]:
        extra: dict[str, Any] = {"command": "true"}
        if kind == "script":
            extra = {"command": ..., "script": base64.b64encode(b"true").decode()}
        status, resp = await api.post(
            "/schedules", json=body(name=name, type=kind, client_ids=clients, **extra)
        )
        assert status == 201, resp

    async def names(**params: str) -> tuple[list[str], int]:
        status, resp = await api.get("/schedules", params=params)
        assert status == 200, resp
        return [s["name"] for s in resp["data"]["data"]], resp["data"]["meta"]["count"]

    assert await names() == (["alpha", "Bravo", "charlie"], 3)  # in creation order
    assert await names(sort="-name") == (["charlie", "alpha", "Bravo"], 3)
    assert await names(**{"filter[type]": "script"}) == (["Bravo"], 1)
    assert await names(**{"filter[name]": "*a*", "sort": "name"}) == (
        ["Bravo", "alpha", "charlie"],
        3,
    )
    assert await names(**{"filter[client_ids]": "db01"}) == (["Bravo", "charlie"], 2)
    assert await names(**{"filter[client_ids]": "WEB*"}) == (["alpha", "Bravo"], 2)
    assert await names(**{"filter[client_ids]": "db01", "filter[type]": "command"}) == (
        ["charlie"],
        1,
    )
    assert await names(**{"filter[created_by]": "admin", "page[limit]": "2"}) == (
        ["alpha", "Bravo"],
        3,
    )
    assert await names(**{"page[limit]": "2", "page[offset]": "2"}) == (["charlie"], 3)
    for params, title in [
        ({"sort": "schedule"}, "unsupported sort field 'schedule'"),
        ({"filter[command]": "x"}, "unsupported filter field 'filter[command]'"),
        ({"page[limit]": "101"}, "pagination limit too big (101) maximum is 100"),
    ]:
        status, resp = await api.get("/schedules", params=params)
        assert (status, error(resp)[0]) == (400, title)


async def test_permission_and_client_access(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    users = [("ops", "pw", ["operators"]), ("planner", "pw", ["planners"])]
    db = await make_users_db(
        sqlite_database(tmp_path),
        users,
        {"operators": {"commands": True}, "planners": {"scheduler": True}},
    )
    server = await make_server(**db_sections(db))
    adopt(server, "web01")
    base = Api(http, api_base(server), None)
    ops, planner = base.as_user("ops", "pw"), base.as_user("planner", "pw")
    status, resp = await ops.get("/schedules")
    assert (status, error(resp)[0]) == (403, 'user does not have "scheduler" permission')
    status, resp = await ops.post("/schedules", json=body())
    assert (status, error(resp)[0]) == (403, 'user does not have "scheduler" permission')
    status, resp = await planner.post("/schedules", json=body())
    assert (status, error(resp)[0]) == (403, "Access denied to client(s) with ID(s): web01")
    client = server.clients.registry.get("web01")
    assert client is not None
    client.allowed_user_groups = ["planners"]
    status, resp = await planner.post("/schedules", json=body())
    assert status == 201 and resp["data"]["created_by"] == "planner"


async def test_upstream_schedule_row_opens_and_is_listed(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "node" / "data"
    data.mkdir(parents=True)
    db = sqlite3.connect(data / "jobs.db")
    db.executescript(UPSTREAM_SCHEMA)
    details = {
        "client_ids": ["c1"],
        "group_ids": None,
        "tags": None,
        "command": "uptime",
        "interpreter": "",
        "cwd": "/tmp",
        "is_sudo": False,
        "timeout_sec": 60,
        "execute_concurrently": False,
        "abort_on_error": None,
        "overlaps": False,
    }
    db.execute(
        "INSERT INTO schedules VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            "sched-1",
            "2024-05-06 07:00:00.123456789+02:00",
            "admin",
            "uptime every morning",
            "0 6 * * *",
            "command",
            json.dumps(details),
        ),
    )
    for jid, started in [
        ("mj-old", "2024-05-06 06:00:00+02:00"),
        ("mj-new", "2024-05-07 06:00:00+02:00"),
    ]:
        db.execute(
            "INSERT INTO multi_jobs VALUES (?, ?, ?, ?, ?)",
            (jid, started, "admin", json.dumps({"client_ids": ["c1"]}), "sched-1"),
        )
    rows = [
        ("j-old", "failed", "2024-05-06 06:00:01+02:00", "2024-05-06 06:00:02+02:00", "admin",
         "c1", "mj-old", job_details("uptime", "")),
        ("j-new", "successful", "2024-05-07 06:00:01+02:00", "2024-05-07 06:00:02+02:00",
         "admin", "c1", "mj-new", job_details("uptime", " 06:00 up\n",
                                              result={"stdout": "", "stderr": "",
                                                      "summary": "all good"})),
    ]  # fmt: skip
    db.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()

    server = await make_server()
    assert server.schedule_runner.next_run("sched-1") is not None
    async with aiohttp.ClientSession() as http:
        api = Api(http, api_base(server), ADMIN)
        status, resp = await api.get("/schedules")
        assert status == 200 and resp["data"]["meta"]["count"] == 1
        item = resp["data"]["data"][0]
        assert list(item) == KEYS
        assert item["id"] == "sched-1" and item["cwd"] == "/tmp"
        assert item["created_at"] == "2024-05-06T07:00:00.123456+02:00"
        assert item["last_execution"] == {
            "started_at": "2024-05-07T06:00:00+02:00",
            "client_count": 1,
            "success_count": 1,
            "status": "successful",
            "summary": "all good",
        }
        status, resp = await api.get("/schedules/sched-1")
        assert resp["data"] == item
        status, _ = await api.delete("/schedules/sched-1")
        assert status == 204
        status, resp = await api.get("/commands", params={"filter[schedule_id]": "sched-1"})
        assert resp["meta"]["count"] == 0  # its runs went with it, as upstream
    db = sqlite3.connect(data / "jobs.db")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    assert db.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(3, 0)]
    db.close()
