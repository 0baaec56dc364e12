"""Commands on one client over REST, with simulated clients (api.md §5.6, protocol.md §7)."""

from __future__ import annotations

import asyncio
import dataclasses

from rportd.app import RportServer
from tests.conftest import Api
from tests.jobs.conftest import SimFactory, wait_job, wait_multi


async def test_command_runs_and_its_result_is_stored(api: Api, start_sim: SimFactory) -> None:
    sim = await start_sim("c1")
    status, body = await api.post("/clients/c1/commands", json={"command": "echo hi"})
    assert status == 200, body
    jid = body["data"]["jid"]

    job = await wait_job(api, "c1", jid)
    assert job["status"] == "successful"
    assert job["result"] == {"stdout": "hi\n", "stderr": "", "summary": ""}
    assert job["error"] == ""
    assert job["client_id"] == "c1" and job["client_name"] == "name-c1"
    assert job["command"] == "echo hi" and job["created_by"] == "admin"
    assert job["timeout_sec"] == 60  # run_remote_cmd_timeout_sec
    assert isinstance(job["pid"], int) and job["finished_at"]
    assert job["is_script"] is False and job["multi_job_id"] is None

    sent = sim.jobs_run[-1]
    assert sent["jid"] == jid and sent["status"] == "" and sent["stream_result"] is False
    assert sent["started_at"] == "0001-01-01T00:00:00Z"  # upstream's REST path sends zero time


async def test_non_zero_exit_is_failed_with_exit_code(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")
    _, body = await api.post(
        "/clients/c1/commands",
        json={"command": "echo oops >&2; exit 3", "timeout_sec": 5, "cwd": "/tmp"},
    )
    job = await wait_job(api, "c1", body["data"]["jid"])
    assert job["status"] == "failed"
    assert job["error"] == "exit status 3"
    assert job["result"]["stderr"] == "oops\n"
    assert job["cwd"] == "/tmp" and job["timeout_sec"] == 5


async def test_timeout_ends_unknown(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")
    _, body = await api.post("/clients/c1/commands", json={"command": "sleep 10", "timeout_sec": 1})
    job = await wait_job(api, "c1", body["data"]["jid"], timeout=10)
    assert job["status"] == "unknown"
    assert job["finished_at"]


async def test_line_of_64_kib_blocks_until_timeout_like_the_real_client(
    api: Api, start_sim: SimFactory
) -> None:
    await start_sim("c1")
    _, body = await api.post(
        "/clients/c1/commands",
        json={"command": "head -c 100000 /dev/zero | tr '\\0' x", "timeout_sec": 2},
    )
    job = await wait_job(api, "c1", body["data"]["jid"], timeout=10)
    assert job["status"] == "unknown"
    assert len(job["result"]["stdout"]) < 65536  # what came before the long line only


async def test_client_refusal_passes_the_clients_words(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1", commands_allow=["^/usr/bin/.*"])
    status, body = await api.post("/clients/c1/commands", json={"command": "echo hi"})
    assert status == 409
    assert body["errors"][0]["title"] == "client error: command is not allowed: echo hi"
    _, listed = await api.get("/clients/c1/commands")
    assert listed["meta"]["count"] == 0  # a refused job is not stored (as upstream)


async def test_deny_list_and_disabled_commands(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1", commands_deny=["rm"])
    status, body = await api.post("/clients/c1/commands", json={"command": "rm -rf /nothing"})
    assert (status, body["errors"][0]["title"]) == (
        409,
        "client error: command is not allowed: rm -rf /nothing",
    )
    await start_sim("c2", remote_commands_enabled=False)
    status, body = await api.post("/clients/c2/commands", json={"command": "echo hi"})
    assert (status, body["errors"][0]["title"]) == (
        409,
        "client error: remote commands execution is disabled",
    )


async def test_unknown_and_disconnected_clients(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    status, body = await api.post("/clients/nope/commands", json={"command": "echo hi"})
    assert (status, body["errors"][0]["title"]) == (404, 'Client with id="nope" not found.')
    sim = await start_sim("c1")
    await sim.stop()
    for _ in range(200):
        if server.clients.registry.get_connected("c1") is None:
            break
        await asyncio.sleep(0.02)
    status, body = await api.post("/clients/c1/commands", json={"command": "echo hi"})
    assert (status, body["errors"][0]["title"]) == (404, 'Active client with id="c1" not found.')


async def test_bad_requests(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")
    cases = [
        ({"command": ""}, "Command cannot be empty.", ""),
        (
            {"command": "x", "interpreter": "tacoscript"},
            "Invalid interpreter.",
            "tacoscript interpreter can't be used for commands execution",
        ),
        (
            {"command": "x", "interpreter": "bash"},
            "Invalid interpreter.",
            "expected interpreter to be one of: [cmd powershell tacoscript], actual: bash",
        ),
        ({"command": "x", "nope": 1}, "Invalid JSON data.", 'json: unknown field "nope"'),
        (
            {"command": "x", "timeout_sec": "5"},
            "Invalid JSON data.",
            "json: cannot unmarshal string into Go struct field ExecuteInput.timeout_sec "
            "of type int",
        ),
    ]
    for payload, title, detail in cases:
        status, body = await api.post("/clients/c1/commands", json=payload)
        assert status == 400, payload
        assert body["errors"][0]["title"] == title
        assert body["errors"][0]["detail"] == detail
    status, body = await api.post("/clients/c1/commands", data=b"")
    assert (status, body["errors"][0]["title"]) == (400, "Missing body with json data.")


async def test_job_not_found_and_other_clients_job(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")
    await start_sim("c2")
    status, body = await api.get("/clients/c1/commands/nope")
    assert (status, body["errors"][0]["title"]) == (404, 'Job[id="nope"] not found.')
    _, body = await api.post("/clients/c2/commands", json={"command": "true"})
    jid = body["data"]["jid"]
    await wait_job(api, "c2", jid)
    status, _ = await api.get(f"/clients/c1/commands/{jid}")
    assert status == 404  # a job is only found under its own client


async def test_result_after_reconnect_is_accepted(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    sim = await start_sim("c1")
    _, body = await api.post(
        "/clients/c1/commands", json={"command": "sleep 1; echo late", "timeout_sec": 10}
    )
    jid = body["data"]["jid"]
    assert sim.conn is not None
    sim.conn.abort()  # the client drops its connection while the command runs
    await sim.wait_event("Disconnected from", 5)
    job = await wait_job(api, "c1", jid, timeout=15)
    assert job["status"] == "successful" and job["result"]["stdout"] == "late\n"
    assert sim.has_event(f"cmd_result sent for job {jid}")


async def test_client_gone_mid_job_ends_unknown(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    server.jobs.settings = dataclasses.replace(server.jobs.settings, result_grace=0.5)
    sim = await start_sim("c1")
    _, body = await api.post("/clients/c1/commands", json={"command": "sleep 5", "timeout_sec": 1})
    jid = body["data"]["jid"]
    await sim.stop()  # the client process goes away: its result never comes
    job = await wait_job(api, "c1", jid, timeout=10)
    assert job["status"] == "unknown"
    assert job["error"] == (
        "no result received within timeout_sec (1s) + 0.5s: "
        "the client disconnected while the job was running"
    )


async def test_client_that_does_not_answer_run_cmd(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    server.jobs.settings = dataclasses.replace(server.jobs.settings, ack_timeout=0.5)
    sim = await start_sim("c1")

    async def never(*_args: object) -> bytes:
        await asyncio.sleep(30)
        return b""

    sim._req_run_cmd = never  # type: ignore[method-assign,assignment]
    status, body = await api.post("/clients/c1/commands", json={"command": "true"})
    assert status == 500
    assert body["errors"][0] == {
        "code": "",
        "title": "Failed to execute remote command.",
        "detail": "failed to send request: the client did not answer run_cmd within 0.5s",
    }
    status, body = await api.post(
        "/commands", json={"client_ids": ["c1"], "command": "true", "timeout_sec": -5}
    )
    multi = await wait_multi(api, body["data"]["jid"], 1)
    assert multi["timeout_sec"] == 60  # 0 or less: run_remote_cmd_timeout_sec
    assert multi["jobs"][0]["status"] == "failed"
    assert multi["jobs"][0]["error"].endswith("did not answer run_cmd within 0.5s")


async def test_result_that_arrives_before_the_run_cmd_reply_is_kept(
    api: Api, start_sim: SimFactory
) -> None:
    """The real client's job observer can send a short job's result before it answers
    run_cmd; the job must end with that result, not stay running (found with the real client).
    """
    await start_sim("c1", run_cmd_reply_delay=0.3)
    _, body = await api.post("/clients/c1/commands", json={"command": "echo early"})
    jid = body["data"]["jid"]
    job = await wait_job(api, "c1", jid, timeout=5)
    assert job["status"] == "successful" and job["result"]["stdout"] == "early\n"
    await asyncio.sleep(0.5)  # the running copy from the late reply has been written by now
    _, body = await api.get(f"/clients/c1/commands/{jid}")
    assert body["data"]["status"] == "successful", body

    _, body = await api.post("/commands", json={"command": "echo early", "client_ids": ["c1"]})
    multi = await wait_multi(api, body["data"]["jid"], 1, timeout=5)
    await asyncio.sleep(0.5)
    _, body = await api.get(f"/commands/{multi['jid']}")
    assert [j["status"] for j in body["data"]["jobs"]] == ["successful"], body
