"""Job list queries, oversized results and retention (api.md §3, §5.6; protocol.md §7.6)."""

from __future__ import annotations

from typing import Any

import aiohttp

from rportd.app import RportServer
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.jobs.conftest import SimFactory, sim_config, wait_job


async def run(api: Api, client_id: str, command: str) -> dict[str, Any]:
    status, body = await api.post(f"/clients/{client_id}/commands", json={"command": command})
    assert status == 200, body
    return await wait_job(api, client_id, body["data"]["jid"])


async def test_job_list_sort_filter_fields_pages(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")
    await start_sim("c2")
    jobs = [await run(api, "c1", f"echo {n}; exit {n % 2}") for n in range(6)]
    await run(api, "c2", "echo other")

    status, body = await api.get("/clients/c1/commands")
    assert status == 200 and body["meta"]["count"] == 6
    assert [j["jid"] for j in body["data"]] == [j["jid"] for j in reversed(jobs)]
    assert set(body["data"][0]) == {"jid", "status", "finished_at", "result"}
    assert body["data"][0]["result"] == {"summary": ""}

    status, body = await api.get(
        "/clients/c1/commands",
        params=[
            ("filter[status]", "failed"),
            ("sort", "started_at"),
            ("fields[commands]", "jid,command,client_id"),
            ("fields[result]", "stdout"),
        ],
    )
    assert body["meta"]["count"] == 3
    assert body["data"] == [
        {"jid": j["jid"], "client_id": "c1", "command": j["command"],
         "result": {"stdout": j["result"]["stdout"]}}
        for j in jobs if j["status"] == "failed"
    ]  # fmt: skip

    status, body = await api.get(
        "/clients/c1/commands",
        params={"fields[jobs]": "jid", "page[limit]": "2", "page[offset]": "1", "sort": "jid"},
    )
    ordered = sorted(j["jid"] for j in jobs)
    assert body["data"] == [{"jid": ordered[1]}, {"jid": ordered[2]}]  # no default result
    assert body["meta"]["count"] == 6

    day = jobs[0]["started_at"][:10]
    for params, count in [
        ({"filter[started_at][since]": day}, 6),
        ({"filter[started_at][since]": "2999-01-01"}, 0),
        ({"filter[finished_at][until]": "2999-01-01T00:00:00Z"}, 6),
        ({"filter[finished_at][lt]": "2000-01-01T00:00:00+02:00"}, 0),
    ]:
        status, body = await api.get("/clients/c1/commands", params=params)
        assert (status, body["meta"]["count"]) == (200, count), params
    status, body = await api.get(
        "/clients/c1/commands", params={"filter[command]": "echo*", "filter[jid]": "x"}
    )
    assert (status, body["errors"][0]["title"]) == (
        400,
        "unsupported filter field 'filter[command]'",
    )
    for params, title in [
        ({"sort": "command"}, "unsupported sort field 'command'"),
        ({"fields[jobs]": "stream_result"},
         'unsupported field "stream_result" for resource "jobs"'),
        ({"fields[nope]": "x"}, 'unsupported resource in fields: "nope"'),
        ({"page[limit]": "1001"}, "pagination limit too big (1001) maximum is 1000"),
    ]:  # fmt: skip
        status, body = await api.get("/clients/c1/commands", params=params)
        assert (status, body["errors"][0]["title"]) == (400, title)


async def test_oversized_result_fails_the_job_visibly(
    make_server: ServerFactory, sims: list[Any]
) -> None:
    from tests.simulator import RportClientSim

    server: RportServer = await make_server(server={"max_request_bytes_client": 4096})
    sim = RportClientSim(sim_config(server, "c1"))
    sims.append(sim)
    await sim.start()
    await sim.wait_registered(10)
    async with aiohttp.ClientSession() as http:
        api = Api(http, api_base(server), ADMIN)
        job = await run(api, "c1", "head -c 20000 /dev/zero | tr '\\0' x")
        assert job["status"] == "failed"
        assert job["error"].startswith("the client's result of ")
        assert "exceeds max_request_bytes_client (4096 bytes) and was dropped" in job["error"]
        assert "(the client reported status 'successful')" in job["error"]
        assert job["result"] is None
        small = await run(api, "c1", "echo fits")
        assert small["status"] == "successful"  # the connection is still fine


async def test_jobs_max_results_cleanup(
    api: Api, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1")
    jobs = [await run(api, "c1", f"echo {n}") for n in range(5)]
    _, body = await api.post("/commands", json={"client_ids": ["c1"], "command": "true"})
    multi_jid = body["data"]["jid"]
    await api.get(f"/commands/{multi_jid}")
    removed = await server.jobs.repo.cleanup(2)
    assert removed >= 3
    _, body = await api.get("/clients/c1/commands", params={"fields[jobs]": "jid"})
    kept = {j["jid"] for j in body["data"]}
    assert len(kept) <= 2 and jobs[0]["jid"] not in kept
