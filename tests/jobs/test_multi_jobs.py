"""Multi-client jobs over 20 simulated clients: sequential, concurrent, abort_on_error."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from rportd.app import RportServer
from rportd.clients.model import Client
from tests.conftest import Api
from tests.jobs.conftest import SimFactory, wait_multi

IDS = [f"m{n:02d}" for n in range(20)]


async def start_many(start_sim: SimFactory, ids: list[str], **overrides: Any) -> None:
    await asyncio.gather(*(start_sim(i, **overrides) for i in ids))


def started_order(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["client_id"] for j in sorted(jobs, key=lambda j: j["started_at"])]


async def test_sequential_over_20_clients(api: Api, start_sim: SimFactory) -> None:
    await start_many(start_sim, IDS)
    status, body = await api.post(
        "/commands", json={"client_ids": IDS, "command": "echo $PPID", "timeout_sec": 10}
    )
    assert status == 200, body
    jid = body["data"]["jid"]
    multi = await wait_multi(api, jid, 20)
    assert multi["client_ids"] == IDS and multi["concurrent"] is False
    assert multi["abort_on_err"] is True and multi["command"] == "echo $PPID"
    jobs = multi["jobs"]
    assert {j["status"] for j in jobs} == {"successful"}
    assert all(j["multi_job_id"] == jid for j in jobs)
    # one after the other, in the requested order, each after the previous one finished
    ordered = sorted(jobs, key=lambda j: j["started_at"])
    assert [j["client_id"] for j in ordered] == IDS
    for prev, cur in itertools.pairwise(ordered):
        assert prev["finished_at"] <= cur["started_at"]

    status, listed = await api.get(f"/commands/{jid}/jobs", params={"page[limit]": "5"})
    assert status == 200 and listed["meta"]["count"] == 20 and len(listed["data"]) == 5
    status, summaries = await api.get("/commands")
    assert summaries["data"][0]["jid"] == jid and summaries["meta"]["count"] == 1
    assert set(summaries["data"][0]) == {"jid", "started_at", "created_by", "schedule_id"}


async def test_concurrent_over_20_clients(api: Api, start_sim: SimFactory) -> None:
    await start_many(start_sim, IDS)
    _, body = await api.post(
        "/commands",
        json={
            "client_ids": IDS,
            "command": "sleep 1; echo done",
            "execute_concurrently": True,
            "timeout_sec": 10,
        },
    )
    t0 = asyncio.get_running_loop().time()
    multi = await wait_multi(api, body["data"]["jid"], 20)
    elapsed = asyncio.get_running_loop().time() - t0
    assert multi["concurrent"] is True
    assert {j["status"] for j in multi["jobs"]} == {"successful"}
    assert {j["result"]["stdout"] for j in multi["jobs"]} == {"done\n"}
    assert elapsed < 10  # 20 one-second commands did not run one after the other


async def test_abort_on_error_stops_after_a_failed_job(api: Api, start_sim: SimFactory) -> None:
    await start_many(start_sim, IDS[:5])
    _, body = await api.post("/commands", json={"client_ids": IDS[:5], "command": "exit 1"})
    multi = await wait_multi(api, body["data"]["jid"], 1)
    await asyncio.sleep(0.5)
    _, again = await api.get(f"/commands/{body['data']['jid']}")
    assert [j["status"] for j in again["data"]["jobs"]] == ["failed"]  # the others never ran
    assert multi["jobs"][0]["client_id"] == IDS[0]

    _, body = await api.post(
        "/commands",
        json={"client_ids": IDS[:5], "command": "exit 1", "abort_on_error": False},
    )
    multi = await wait_multi(api, body["data"]["jid"], 5)
    assert [j["status"] for j in multi["jobs"]] == ["failed"] * 5
    assert multi["abort_on_err"] is False


async def test_refusal_aborts_but_offline_clients_do_not(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    await start_sim("ok1")
    await start_sim("refuses", commands_allow=["^/usr/bin/.*"])
    await start_sim("ok2")
    server.clients.registry._index(Client(id="offline", name="gone"))
    _, body = await api.post(
        "/commands", json={"client_ids": ["offline", "ok1", "refuses", "ok2"], "command": "true"}
    )
    multi = await wait_multi(api, body["data"]["jid"], 3)
    await asyncio.sleep(0.3)
    _, body = await api.get(f"/commands/{body['data']['jid']}")
    jobs = {j["client_id"]: j for j in body["data"]["jobs"]}
    assert set(jobs) == {"offline", "ok1", "refuses"}  # ok2 never ran: aborted
    assert jobs["offline"]["status"] == "failed"
    assert jobs["offline"]["error"] == "client is not connected"
    assert jobs["refuses"]["status"] == "failed"
    assert jobs["refuses"]["error"] == "client error: command is not allowed: true"
    assert jobs["ok1"]["status"] == "successful"
    assert multi["jid"] == body["data"]["jid"]


async def test_targeting_by_tags_and_groups(
    api: Api, start_sim: SimFactory, server: RportServer
) -> None:
    await start_sim("t1", tags=["web", "prod"])
    await start_sim("t2", tags=["web"])
    await start_sim("t3", tags=["db"])
    _, body = await api.post(
        "/commands", json={"tags": {"tags": ["web", "prod"], "operator": "AND"}, "command": "true"}
    )
    multi = await wait_multi(api, body["data"]["jid"], 1)
    assert [j["client_id"] for j in multi["jobs"]] == ["t1"]
    assert multi["tags"] == {"tags": ["web", "prod"], "operator": "AND"}
    _, body = await api.post(
        "/commands", json={"tags": {"tags": ["prod", "db"]}, "command": "true"}
    )
    multi = await wait_multi(api, body["data"]["jid"], 2)
    assert sorted(j["client_id"] for j in multi["jobs"]) == ["t1", "t3"]

    for group in (
        {"id": "g", "params": {"client_id": ["t2", "T3"]}},
        {"id": "empty", "params": {"client_id": ["nobody*"]}},
    ):
        status, body = await api.post("/client-groups", json=group)
        assert status == 201, body
    _, body = await api.post(
        "/commands", json={"client_ids": ["t1"], "group_ids": ["g"], "command": "true"}
    )
    multi = await wait_multi(api, body["data"]["jid"], 3)
    assert started_order(multi["jobs"]) == ["t1", "t2", "t3"]
    assert multi["group_ids"] == ["g"]
    status, body = await api.post("/commands", json={"group_ids": ["x"], "command": "true"})
    assert (status, body["errors"][0]["title"]) == (400, 'Unknown group with id="x".')
    status, body = await api.post("/commands", json={"group_ids": ["empty"], "command": "true"})
    assert (status, body["errors"][0]["title"]) == (
        400,
        "no active clients belong to the selected group(s)",
    )


async def test_targeting_errors(api: Api, start_sim: SimFactory) -> None:
    await start_sim("c1")
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"command": "true"}, 400, "Missing targeting parameters.",
         "please specify targeting options, such as client ids, groups ids or tags"),
        ({"command": "true", "client_ids": ["c1"], "tags": {"tags": ["a"]}}, 400,
         "Multiple targeting parameters.",
         "multiple targeting options are not supported. Please specify only one"),
        ({"command": "true", "tags": {"tags": []}}, 400, "No tags specified.",
         "please specify tags in the tags list"),
        ({"command": "true", "tags": {"tags": ["none"]}}, 400,
         "at least 1 client should be specified", ""),
        ({"command": "true", "client_ids": []}, 400, "at least 1 client should be specified", ""),
        ({"command": "true", "client_ids": ["c1", "zz"]}, 404,
         'Client with id="zz" not found.', ""),
        ({"client_ids": ["c1"]}, 400, "Command cannot be empty.", ""),
        ({"client_ids": ["c1"], "command": "x", "abort_on_error": "yes"}, 400,
         "Invalid JSON data.", "json: cannot unmarshal string into Go struct field "
         "MultiJobRequest.abort_on_error of type bool"),
    ]  # fmt: skip
    for payload, code, title, detail in cases:
        status, body = await api.post("/commands", json=payload)
        assert status == code, payload
        assert body["errors"][0]["title"] == title, payload
        assert body["errors"][0]["detail"] == detail, payload
    status, body = await api.get("/commands/nope")
    assert (status, body["errors"][0]["title"]) == (404, 'Multi-client Job[id="nope"] not found.')
