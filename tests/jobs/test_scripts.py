"""Scripts: base64 in the API, plain text with ``is_script`` on the wire (protocol.md §7.5)."""

from __future__ import annotations

import base64

from tests.conftest import Api
from tests.jobs.conftest import SimFactory, wait_job, wait_multi

SCRIPT = "#!/bin/sh\necho \"script in $(pwd)\"\necho '<summary>all good</summary>'\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_script_job_runs_with_cwd_and_summary(api: Api, start_sim: SimFactory) -> None:
    sim = await start_sim("c1", remote_scripts_enabled=True)
    status, body = await api.post(
        "/clients/c1/scripts", json={"script": b64(SCRIPT), "cwd": "/tmp", "timeout_sec": 5}
    )
    assert status == 200, body
    job = await wait_job(api, "c1", body["data"]["jid"])
    assert job["status"] == "successful"
    assert job["is_script"] is True and job["command"] == SCRIPT
    assert job["result"]["stdout"] == "script in /tmp\n<summary>all good</summary>\n"
    assert job["result"]["summary"] == "all good"
    sent = sim.jobs_run[-1]
    assert sent["is_script"] is True and sent["command"] == SCRIPT and sent["cwd"] == "/tmp"


async def test_script_with_interpreter_alias_path(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1", remote_scripts_enabled=True)
    _, body = await api.post(
        "/clients/c1/scripts",
        json={"script": b64("print('from python')"), "interpreter": "python3"},
    )
    job = await wait_job(api, "c1", body["data"]["jid"])
    assert job["status"] == "successful" and job["result"]["stdout"] == "from python\n"
    assert job["interpreter"] == "python3"


async def test_scripts_disabled_on_the_client(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")  # remote-scripts are off by default
    status, body = await api.post("/clients/c1/scripts", json={"script": b64("echo hi")})
    assert (status, body["errors"][0]["title"]) == (
        409,
        "client error: remote scripts are disabled",
    )


async def test_script_request_errors(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1", remote_scripts_enabled=True)
    status, body = await api.post("/clients/c1/scripts", json={"cwd": "/"})
    assert (status, body["errors"][0]["title"]) == (400, "Missing script body")
    status, body = await api.post("/clients/c1/scripts", json={"script": "not base64!"})
    assert status == 400
    assert body["errors"][0]["title"] == "failed to decode script payload from base64"
    status, body = await api.post("/scripts", json={"client_ids": ["c1"]})
    assert (status, body["errors"][0]["title"]) == (400, "Missing script body")


async def test_multi_client_script(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1", remote_scripts_enabled=True)
    await start_sim("c2", remote_scripts_enabled=True)
    status, body = await api.post(
        "/scripts",
        json={
            "client_ids": ["c1", "c2"],
            "script": b64("echo $0 >/dev/null; echo multi"),
            "execute_concurrently": True,
        },
    )
    assert status == 200, body
    multi = await wait_multi(api, body["data"]["jid"], 2)
    assert multi["is_script"] is True and multi["command"] == "echo $0 >/dev/null; echo multi"
    assert [j["result"]["stdout"] for j in multi["jobs"]] == ["multi\n", "multi\n"]
    assert all(j["is_script"] for j in multi["jobs"])
