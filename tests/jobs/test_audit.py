"""Jobs in the audit log: execute.start per target client and execute.done per result."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from rportd.app import RportServer
from tests.conftest import Api
from tests.jobs.conftest import SimFactory, wait_job, wait_multi
from tests.jobs.test_websocket import collect, ws_url


async def audit_entries(api: Api, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        status, body = await api.get("/auditlog", params={"page[limit]": "100"})
        assert status == 200, body
        if len(body["data"]) >= count:
            return list(body["data"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} audit entries: {body}")


async def test_commands_are_audited(
    api: Api, http: aiohttp.ClientSession, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1", hostname="host-1")
    await start_sim("c2", hostname="host-2")
    _, body = await api.post("/clients/c1/commands", json={"command": "echo one"})
    jid = body["data"]["jid"]
    await wait_job(api, "c1", jid)
    _, body = await api.post("/commands", json={"client_ids": ["c1", "c2"], "command": "true"})
    multi_jid = body["data"]["jid"]
    await wait_multi(api, multi_jid, 2)
    async with http.ws_connect(await ws_url(server, api)) as ws:
        await ws.send_str(json.dumps({"client_ids": ["c2"], "command": "echo ws"}))
        messages = await collect(ws)
    ws_multi = messages[-1]["multi_job_id"]

    entries = await audit_entries(api, 8)
    seen = [
        (e["application"], e["action"], e["affected_id"], e["client_id"], e["client_hostname"])
        for e in entries
    ]
    start, done = "execute.start", "execute.done"
    app = "client.command"
    assert (app, start, jid, "c1", "host-1") in seen
    assert (app, done, jid, "c1", "host-1") in seen
    assert (app, start, multi_jid, "c1", "host-1") in seen
    assert (app, start, multi_jid, "c2", "host-2") in seen
    assert seen.count((app, done, multi_jid, "c1", "host-1")) == 1
    assert (app, start, ws_multi, "c2", "host-2") in seen
    assert (app, done, ws_multi, "c2", "host-2") in seen
    ws_start = next(e for e in entries if e["affected_id"] == ws_multi and e["action"] == start)
    assert ws_start["username"] == "admin" and ws_start["remote_ip"] == "127.0.0.1"
    assert json.loads(ws_start["request"])["command"] == "echo ws"
    done_entry = next(e for e in entries if e["affected_id"] == jid and e["action"] == done)
    assert json.loads(done_entry["response"])["result"]["stdout"] == "one\n"
