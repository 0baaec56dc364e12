"""Monitoring reads over ``monitoring.db``: metrics, processes, mount points, graphs (api.md §6)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rportd.app import RportServer
from rportd.clients.model import Client
from rportd.gotypes import format_db_time, format_time
from tests.access.conftest import make_users_db
from tests.conftest import Api, ServerFactory, api_base
from tests.dbservers import sqlite_database
from tests.jobs.conftest import SimFactory

DISABLED = "monitoring disabled. re-enable to view monitoring statistics."
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def title(body: Any) -> str:
    return str(body["errors"][0]["title"])


def epoch(moment: datetime) -> str:
    return str(int(moment.timestamp()))


async def insert(server: RportServer, client_id: str, rows: list[dict[str, Any]]) -> None:
    """Measurements written straight into monitoring.db (as an older server left them)."""
    assert server.measurements is not None
    async with server.measurements.db.transaction() as tx:
        await tx.execute_many(
            "INSERT INTO measurements (client_id, timestamp, cpu_usage_percent, "
            "memory_usage_percent, io_usage_percent, processes, mountpoints, net_lan_in, "
            "net_lan_out, net_wan_in, net_wan_out) VALUES (:client_id, :timestamp, :cpu, :mem, "
            ":io, :processes, :mountpoints, :lan_in, :lan_out, :wan_in, :wan_out)",
            [
                {
                    "client_id": client_id,
                    "cpu": 0.0,
                    "mem": 0.0,
                    "io": 0.0,
                    "processes": None,
                    "mountpoints": None,
                    "lan_in": None,
                    "lan_out": None,
                    "wan_in": None,
                    "wan_out": None,
                    **row,
                    "timestamp": format_db_time(row["timestamp"]),
                }
                for row in rows
            ],
        )


def known(server: RportServer, client_id: str = "c1", **fields: Any) -> Client:
    client = Client(id=client_id, name=client_id, **fields)
    server.clients.registry._index(client)
    return client


async def test_measurements_sent_by_clients_are_listed(
    api: Api, server: RportServer, start_sim: SimFactory
) -> None:
    sim = await start_sim("c1", monitoring_enabled=True, monitoring_interval=0.1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        status, body = await api.get("/clients/c1/metrics")
        assert status == 200, body
        if body["meta"]["count"] >= 3:
            break
        assert loop.time() < deadline, body
        await asyncio.sleep(0.2)
    assert body["meta"]["count"] <= sim.counters.measurements_sent
    [latest] = body["data"]  # default page: the newest one
    assert set(latest) == {
        "timestamp",
        "cpu_usage_percent",
        "memory_usage_percent",
        "io_usage_percent",
    }
    assert 0.5 <= latest["cpu_usage_percent"] <= 60 and 10 <= latest["memory_usage_percent"] <= 80
    stamp = datetime.fromisoformat(latest["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 15  # the server's receive time
    status, body = await api.get(
        "/clients/c1/metrics", params={"page[limit]": "3", "sort": "timestamp"}
    )
    stamps = [item["timestamp"] for item in body["data"]]
    assert len(stamps) == 3 and stamps == sorted(stamps)
    status, body = await api.get("/clients/c1/processes")
    assert status == 200, body
    [item] = body["data"]
    assert [p["name"] for p in item["processes"]] == ["sshd", "systemd"]
    assert item["processes"][0]["pid"] == 812
    status, body = await api.get("/clients/c1/mountpoints")
    [item] = body["data"]
    assert item["mountpoints"]["total_b./"] == 53687091200
    assert set(item) == {"timestamp", "mountpoints"}


async def test_metrics_filters_pages_fields_and_sort(api: Api, server: RportServer) -> None:
    known(server)
    known(server, "other")
    rows = [
        {"timestamp": START + timedelta(minutes=i), "cpu": float(i), "mem": 50.5, "io": 1.25}
        for i in range(10)
    ]
    await insert(server, "c1", rows)
    await insert(server, "other", [{"timestamp": START, "cpu": 99.0}])

    async def get(**params: str) -> tuple[int, Any]:
        return await api.get("/clients/c1/metrics", params=params)

    status, body = await get()
    assert body == {
        "data": [
            {
                "timestamp": format_time(START + timedelta(minutes=9)),
                "cpu_usage_percent": 9,
                "memory_usage_percent": 50.5,
                "io_usage_percent": 1.25,
            }
        ],
        "meta": {"count": 10},
    }
    # gt/lt: Unix seconds, exclusive
    status, body = await get(
        **{
            "filter[timestamp][gt]": epoch(START + timedelta(minutes=2)),
            "filter[timestamp][lt]": epoch(START + timedelta(minutes=6)),
            "page[limit]": "120",
        }
    )
    assert [d["cpu_usage_percent"] for d in body["data"]] == [5, 4, 3]
    assert body["meta"]["count"] == 3
    # since/until: RFC 3339 in any zone, inclusive
    status, body = await get(
        **{
            "filter[timestamp][since]": "2026-03-01T13:02:00+01:00",
            "filter[timestamp][until]": "2026-03-01T12:04:00Z",
            "page[limit]": "10",
            "sort": "timestamp",
            "fields[metrics]": "timestamp,cpu_usage_percent",
        }
    )
    assert body["data"] == [
        {"timestamp": format_time(START + timedelta(minutes=m)), "cpu_usage_percent": m}
        for m in (2, 3, 4)
    ]
    status, body = await get(**{"page[limit]": "2", "page[offset]": "3"})
    assert [d["cpu_usage_percent"] for d in body["data"]] == [6, 5]
    assert body["meta"]["count"] == 10
    for params, expected in (
        ({"page[limit]": "121"}, "pagination limit too big (121) maximum is 120"),
        ({"filter[timestamp][gt]": "yesterday"}, "Illegal timestamp value yesterday"),
        ({"filter[timestamp][since]": "1700000000"}, "Illegal time value"),
        ({"filter[timestamp]": "1700000000"}, "unsupported filter field 'filter[timestamp]'"),
        ({"sort": "cpu_usage_percent"}, "unsupported sort field 'cpu_usage_percent'"),
        ({"fields[metrics]": "processes"}, 'unsupported field "processes" for resource "metrics"'),
    ):
        status, body = await get(**params)
        assert (status, title(body)) == (400, expected), params


async def test_processes_and_mountpoints_pages(api: Api, server: RportServer) -> None:
    known(server)
    await insert(
        server,
        "c1",
        [
            {
                "timestamp": START + timedelta(minutes=i),
                "processes": f'[{{"pid":{i},"name":"p{i}"}}]',
                "mountpoints": f'{{"free_b./":{i}}}',
            }
            for i in range(12)
        ]
        + [{"timestamp": START + timedelta(minutes=30)}],  # nothing reported
    )
    status, body = await api.get("/clients/c1/processes", params={"page[limit]": "10"})
    assert status == 200 and body["meta"]["count"] == 13
    assert body["data"][0] == {
        "timestamp": format_time(START + timedelta(minutes=30)),
        "processes": None,
    }
    assert body["data"][1]["processes"] == [{"pid": 11, "name": "p11"}]
    status, body = await api.get("/clients/c1/processes", params={"page[limit]": "11"})
    assert (status, title(body)) == (400, "pagination limit too big (11) maximum is 10")
    status, body = await api.get(
        "/clients/c1/mountpoints",
        params={"filter[timestamp][lt]": epoch(START + timedelta(minutes=1)), "page[limit]": "100"},
    )
    assert body == {
        "data": [{"timestamp": format_time(START), "mountpoints": {"free_b./": 0}}],
        "meta": {"count": 1},
    }


def expected_buckets(rows: list[dict[str, Any]], seconds: float) -> dict[int, list[dict[str, Any]]]:
    """SQLite's ``round(strftime('%s', t) / seconds, 0)`` grouping."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        key = math.floor(int(row["timestamp"].timestamp()) / seconds + 0.5)
        groups.setdefault(key, []).append(row)
    return groups


async def test_graph_metrics_are_downsampled(api: Api, server: RportServer) -> None:
    known(server)
    rows: list[dict[str, Any]] = [
        {
            "timestamp": START + timedelta(seconds=20 * i),
            "cpu": float(i % 7),
            "mem": 40 + (i % 3) / 3,
            "io": 0.0,
        }
        for i in range(3 * 60 * 3)  # 3 hours, every 20 s
    ]
    await insert(server, "c1", rows)
    lower, upper = START + timedelta(minutes=30), START + timedelta(hours=2, minutes=30)
    params = {"filter[timestamp][gt]": epoch(lower), "filter[timestamp][lt]": epoch(upper)}
    status, body = await api.get("/clients/c1/graph-metrics", params=params)
    assert status == 200, body
    inside = [r for r in rows if lower < r["timestamp"] < upper]
    groups = expected_buckets(inside, 2 * 29)  # 2 hours -> 58 s buckets
    assert len(body["data"]) == len(groups) and 120 <= len(groups) <= 126
    points = body["data"]
    stamps = [p["timestamp"] for p in points]
    assert stamps == sorted(stamps, reverse=True)  # newest first by default
    for point, (_, members) in zip(points, sorted(groups.items(), reverse=True), strict=True):
        cpu = [m["cpu"] for m in members]
        mem = [m["mem"] for m in members]
        assert point["timestamp"] in {format_time(m["timestamp"]) for m in members}
        want_cpu = {"avg": round(sum(cpu) / len(cpu), 2), "min": min(cpu), "max": max(cpu)}
        assert point["cpu_usage_percent"] == {k: v for k, v in want_cpu.items() if v}
        assert point["memory_usage_percent"]["avg"] == pytest.approx(sum(mem) / len(mem), abs=0.006)
        assert point["memory_usage_percent"]["max"] == pytest.approx(max(mem))
        assert point["io_usage_percent"] == {}  # zeros are left out, as upstream's omitempty
    base = f"{api_base(server)}/clients/c1/graph-metrics"
    assert body["links"] == {
        name: f"{base}/{name}"
        for name in ("cpu_usage_percent", "mem_usage_percent", "io_usage_percent")
    }
    status, body = await api.get(
        "/clients/c1/graph-metrics/mem_usage_percent",
        params={
            "filter[timestamp][since]": format_time(lower),
            "filter[timestamp][until]": format_time(lower + timedelta(hours=2)),
            "sort": "timestamp",
        },
    )
    assert status == 200, body
    assert set(body) == {"data"}
    first = body["data"][0]
    assert set(first) == {"timestamp", "memory_usage_percent"}
    assert set(first["memory_usage_percent"]) == {"avg", "min", "max"}
    assert [p["timestamp"] for p in body["data"]] == sorted(p["timestamp"] for p in body["data"])


async def test_network_graphs_need_a_card_and_scale_to_its_speed(
    api: Api, server: RportServer
) -> None:
    client = known(server)
    await insert(
        server,
        "c1",
        [
            {"timestamp": START + timedelta(minutes=10), "lan_in": 1_250_000, "lan_out": 0},
            {"timestamp": START + timedelta(minutes=11), "lan_in": 2_500_000, "lan_out": 0},
        ],
    )
    params = {
        "filter[timestamp][gt]": epoch(START),
        "filter[timestamp][lt]": epoch(START + timedelta(hours=24)),
    }
    status, body = await api.get("/clients/c1/graph-metrics/net_usage_bps_lan", params=params)
    assert (status, title(body)) == (
        404,
        "graph data net_usage_bps_lan not available for client with id c1",
    )
    client.client_configuration = {"monitoring": {"lan_card": {"name": "eth0", "max_speed": 100}}}
    status, body = await api.get("/clients/c1/graph-metrics/net_usage_bps_lan", params=params)
    assert status == 200, body
    # 24 h -> 696 s buckets: both rows fall into one bucket
    [point] = body["data"]
    assert point["net_usage_bps_lan"] == {
        "in_avg": 1875000,
        "in_min": 1250000,
        "in_max": 2500000,
        "out_avg": 0,
        "out_min": 0,
        "out_max": 0,
    }
    status, body = await api.get("/clients/c1/graph-metrics/net_usage_percent_lan", params=params)
    [point] = body["data"]
    # percent of 100 Mbit/s = 12.5 MB/s
    assert point["net_usage_percent_lan"]["in_avg"] == pytest.approx(15.0)
    assert point["net_usage_percent_lan"]["in_max"] == pytest.approx(20.0)
    status, body = await api.get("/clients/c1/graph-metrics", params=params)
    basic = ["cpu_usage_percent", "mem_usage_percent", "io_usage_percent"]
    assert sorted(body["links"]) == sorted([*basic, "net_usage_percent_lan", "net_usage_bps_lan"])
    status, body = await api.get("/clients/c1/graph-metrics/net_usage_bps_wan", params=params)
    assert status == 404
    status, body = await api.get("/clients/c1/graph-metrics/disk", params=params)
    assert (status, title(body)) == (404, "unknown graph: disk")


async def test_graph_window_rules(api: Api, server: RportServer) -> None:
    known(server)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    hours = timedelta(hours=1)

    async def graph(**params: str) -> tuple[int, str]:
        status, body = await api.get("/clients/c1/graph-metrics", params=params)
        return status, title(body) if status != 200 else ""

    gt, lt = "filter[timestamp][gt]", "filter[timestamp][lt]"
    since, until = "filter[timestamp][since]", "filter[timestamp][until]"
    assert await graph() == (400, "Illegal number of filter options")
    assert await graph(**{gt: epoch(now)}) == (400, "Illegal number of filter options")
    assert await graph(**{gt: epoch(now), until: format_time(now + 3 * hours) or ""}) == (
        400,
        "Illegal filter pair filter[timestamp][gt] filter[timestamp][until]",
    )
    assert await graph(**{gt: epoch(now), lt: epoch(now - 3 * hours)}) == (
        400,
        "Illegal time value (upper before lower)",
    )
    assert await graph(**{gt: epoch(now), lt: epoch(now + hours)}) == (
        400,
        "Illegal period (min,max allowed: 2,48 hours)",
    )
    assert await graph(
        **{since: format_time(now) or "", until: format_time(now + 49 * hours) or ""}
    ) == (
        400,
        "Illegal period (min,max allowed: 2,48 hours)",
    )
    assert await graph(**{gt: "x", lt: epoch(now)}) == (400, "Illegal timestamp value x")
    assert await graph(**{gt: epoch(now), lt: epoch(now + 48 * hours)}) == (200, "")
    _, body = await api.get(
        "/clients/c1/graph-metrics", params={gt: epoch(now), lt: epoch(now + 2 * hours)}
    )
    assert body == {"data": [], "links": body["links"]}


async def test_disabled_monitoring_answers_404(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(monitoring={"enabled": False})
    api = Api(http, api_base(server), ("admin", "admin-password-123"))
    known(server)
    assert server.measurements is None
    for path in (
        "metrics",
        "processes",
        "mountpoints",
        "graph-metrics",
        "graph-metrics/cpu_usage_percent",
    ):
        status, body = await api.get(f"/clients/c1/{path}")
        assert (status, title(body)) == (404, DISABLED), path
        status, body = await api.get(f"/clients/nope/{path}")
        assert (status, title(body)) == (404, 'Client with id="nope" not found.'), path


async def test_monitoring_permission(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    db = await make_users_db(
        sqlite_database(tmp_path),
        [("ops", "pw", ["ops"]), ("mon", "pw", ["mon"])],
        {"ops": {"commands": True}, "mon": {"monitoring": True}},
    )
    server = await make_server(
        database=db.section,
        api={
            "auth": None,
            "auth_user_table": "users",
            "auth_group_table": "groups",
            "auth_group_details_table": "group_details",
        },
    )
    known(server, allowed_user_groups=["ops", "mon"])
    base = Api(http, api_base(server), None)
    status, body = await base.as_user("ops", "pw").get("/clients/c1/metrics")
    assert (status, title(body)) == (403, 'user does not have "monitoring" permission')
    status, body = await base.as_user("mon", "pw").get("/clients/c1/metrics")
    assert (status, body) == (200, {"data": [], "meta": {"count": 0}})
