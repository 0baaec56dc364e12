"""An upstream-created jobs.db opens as is; its jobs and multi-jobs are listed (storage.md §2)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ADMIN, Api, ServerFactory, api_base

# What upstream's golang-migrate leaves in jobs.db (storage.md §2), version 3.
UPSTREAM_SCHEMA = """
CREATE TABLE schema_migrations (version uint64,dirty bool);
CREATE UNIQUE INDEX version_unique ON schema_migrations (version);
CREATE TABLE multi_jobs (
    jid TEXT PRIMARY KEY NOT NULL,
    started_at DATETIME NOT NULL,
    created_by TEXT NOT NULL,
    details TEXT NOT NULL
, schedule_id TEXT NULL) WITHOUT ROWID;
CREATE TABLE jobs (
    jid TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    started_at DATETIME NOT NULL,
    finished_at DATETIME,
    created_by TEXT NOT NULL,
    client_id TEXT NOT NULL,
    multi_job_id TEXT,
    details TEXT NOT NULL,
    FOREIGN KEY (multi_job_id) REFERENCES multi_jobs(jid)
) WITHOUT ROWID;
CREATE INDEX idx_jobs_client_id_time ON jobs (client_id, finished_at DESC);
CREATE INDEX idx_jobs_multi_id ON jobs (multi_job_id);
CREATE TABLE schedules (
    id TEXT PRIMARY KEY NOT NULL,
    created_at DATETIME NOT NULL,
    created_by TEXT NOT NULL,
    name TEXT NOT NULL,
    schedule TEXT NOT NULL,
    type TEXT NOT NULL,
    details TEXT NOT NULL
);
INSERT INTO schema_migrations VALUES (3, 0);
"""


def job_details(command: str, stdout: str, **extra: Any) -> str:
    details = {
        "command": command,
        "cwd": "",
        "is_sudo": False,
        "is_script": False,
        "interpreter": "",
        "pid": 4242,
        "timeout_sec": 60,
        "error": "",
        "result": {"stdout": stdout, "stderr": "", "summary": ""},
        "client_name": "web01",
    }
    details.update(extra)
    return json.dumps(details)


def build_upstream_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(UPSTREAM_SCHEMA)
    db.execute(
        "INSERT INTO multi_jobs VALUES (?, ?, ?, ?, ?)",
        (
            "mj-1",
            "2024-05-06 07:08:00.123456789+02:00",
            "admin",
            json.dumps(
                {
                    "client_ids": ["c1", "c2"],
                    "group_ids": None,
                    "tags": None,
                    "command": "uptime",
                    "interpreter": "",
                    "cwd": "",
                    "is_sudo": False,
                    "timeout_sec": 60,
                    "concurrent": True,
                    "abort_on_err": True,
                }
            ),
            "sched-1",
        ),
    )
    rows = [
        ("j-1", "successful", "2024-05-06 07:08:09.123456789+02:00",
         "2024-05-06 07:08:10.623456789+02:00", "admin", "c1", "mj-1",
         job_details("uptime", " 07:08:10 up 3 days\n")),
        ("j-2", "failed", "2024-05-06 07:08:09.5+02:00", "2024-05-06 07:08:11+02:00", "admin",
         "c2", "mj-1", job_details("uptime", "", error="exit status 1")),
        ("j-3", "successful", "2024-05-07 10:00:00+00:00", "2024-05-07 10:00:01+00:00", "bob",
         "c1", None, job_details("/usr/bin/ls", "a\nb\n", result=None)),
    ]  # fmt: skip
    db.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


async def test_upstream_jobs_db_opens_and_lists(make_server: ServerFactory, tmp_path: Path) -> None:
    data = tmp_path / "node" / "data"
    data.mkdir(parents=True)
    build_upstream_db(data / "jobs.db")
    server = await make_server()
    from rportd.clients.model import Client

    server.clients.registry._index(Client(id="c1", name="web01"))
    async with aiohttp.ClientSession() as http:
        api = Api(http, api_base(server), ADMIN)
        status, body = await api.get("/clients/c1/commands")
        assert status == 200, body
        assert body["meta"]["count"] == 2
        assert body["data"] == [  # finished_at desc, default fields
            {"jid": "j-3", "status": "successful", "finished_at": "2024-05-07T10:00:01Z",
             "result": None},
            {"jid": "j-1", "status": "successful",
             "finished_at": "2024-05-06T07:08:10.623456+02:00", "result": {"summary": ""}},
        ]  # fmt: skip
        status, body = await api.get("/clients/c1/commands/j-1")
        job = body["data"]
        assert job["schedule_id"] == "sched-1" and job["multi_job_id"] == "mj-1"
        assert job["result"]["stdout"] == " 07:08:10 up 3 days\n" and job["pid"] == 4242
        assert job["started_at"] == "2024-05-06T07:08:09.123456+02:00"

        status, body = await api.get("/commands/mj-1")
        multi = body["data"]
        assert multi["client_ids"] == ["c1", "c2"] and multi["concurrent"] is True
        assert multi["schedule_id"] == "sched-1" and multi["is_script"] is False
        assert [j["jid"] for j in multi["jobs"]] == ["j-2", "j-1"]  # newest first
        assert multi["jobs"][0]["error"] == "exit status 1"
        status, body = await api.get("/commands", params={"filter[schedule_id]": "sched-1"})
        assert body["meta"]["count"] == 1 and body["data"][0]["jid"] == "mj-1"

    # the file is still what upstream expects
    db = sqlite3.connect(data / "jobs.db")
    assert db.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(3, 0)]
    db.close()
