"""``GET /metrics``: what an operator's Prometheus scrapes, checked by promtool."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from rportd.app import RportServer
from tests.conftest import ADMIN, Api, ServerFactory, client_url
from tests.jobs.conftest import sim_config, wait_job
from tests.ops.promtool import promtool_check, samples, value
from tests.simulator import RportClientSim, SimulatorConfig
from tests.tunnels.conftest import echo_through


def metrics_url(server: RportServer) -> str:
    assert server.api_address is not None
    return "http://{}:{}/metrics".format(*server.api_address)


async def get_text(
    http: aiohttp.ClientSession, url: str, auth: tuple[str, str] | None = None
) -> tuple[int, str, str]:
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.fixture
async def sim(server: RportServer) -> AsyncIterator[RportClientSim]:
    client = RportClientSim(sim_config(server, "c1"))
    await client.start()
    await client.wait_registered(10)
    yield client
    await client.stop()


async def test_metrics_count_what_happened_and_pass_promtool(
    server: RportServer,
    api: Api,
    http: aiohttp.ClientSession,
    sim: RportClientSim,
    echo_port: int,
) -> None:
    # A job, a tunnel with traffic both ways, a failed API login.
    status, body = await api.post("/clients/c1/commands", json={"command": "echo hi"})
    assert status == 200, body
    job = await wait_job(api, "c1", body["data"]["jid"])
    assert job["status"] == "successful"
    status, body = await api.put("/clients/c1/tunnels", params={"remote": str(echo_port)})
    assert status == 200, body
    payload = os.urandom(300_000)
    assert await echo_through(int(body["data"]["lport"]), payload) == payload
    status, _ = await api.as_user("admin", "wrong-password").get("/me")
    assert status == 401

    status, content_type, text = await get_text(http, metrics_url(server), ADMIN)
    assert status == 200 and content_type.startswith("text/plain; version="), text
    assert await promtool_check(text) == (0, "")

    assert value(text, "rportd_clients_connected") == 1
    assert value(text, "rportd_clients_disconnected") == 0
    assert value(text, "rportd_client_connects_total") == 1
    assert value(text, "rportd_ssh_handshake_seconds_count") == 1
    assert value(text, "rportd_ssh_handshakes_in_progress") == 0
    assert value(text, "rportd_jobs_started_total") == 1
    assert value(text, "rportd_jobs_finished_total", status="successful") == 1
    assert value(text, "rportd_job_duration_seconds_count") == 1
    assert value(text, "rportd_tunnels_open") == 1
    assert value(text, "rportd_tunnel_bytes_total", direction="to_client") == len(payload)
    assert value(text, "rportd_tunnel_bytes_total", direction="from_client") == len(payload)
    assert value(text, "rportd_login_failures_total", listener="api") == 1
    assert value(text, "rportd_login_failures_total", listener="clients") == 0
    route = "/api/v1/clients/{client_id}/commands"
    assert value(text, "rportd_api_requests_total", method="POST", route=route, status="200") == 1
    assert value(text, "rportd_api_request_duration_seconds_count", method="POST", route=route) == 1
    assert value(text, "rportd_api_requests_total", method="GET", route="/api/v1/me", status="401")
    assert value(text, "rportd_db_write_duration_seconds_count", database="jobs.db") >= 2
    assert value(text, "rportd_ha_serving") == 1 and value(text, "rportd_ha_enabled") == 0
    assert value(text, "process_resident_memory_bytes") > 10_000_000
    # Client ids never become labels (cardinality): only route templates do.
    assert all("c1" not in dict(labels).values() for _, labels in samples(text))

    # Bytes of a closed tunnel still count.
    status, _ = await api.delete("/clients/c1/tunnels/1")
    assert status == 204
    _, _, text = await get_text(http, metrics_url(server), ADMIN)
    assert value(text, "rportd_tunnels_open") == 0
    assert value(text, "rportd_tunnel_bytes_total", direction="to_client") == len(payload)


async def test_metrics_need_a_login_unless_configured_open(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    guarded = await make_server("guarded")
    status, _, _ = await get_text(http, metrics_url(guarded))
    assert status == 401
    status, _, _ = await get_text(http, metrics_url(guarded), ("admin", "nope"))
    assert status == 401

    # Its own listener, open (on a private address), and none on the API.
    separate = await make_server(
        "separate", metrics={"address": "127.0.0.1:0", "require_auth": False}
    )
    assert separate.metrics_address is not None
    status, _, text = await get_text(http, "http://{}:{}/metrics".format(*separate.metrics_address))
    assert status == 200 and value(text, "rportd_clients_connected") == 0
    status, _, text = await get_text(http, metrics_url(separate))
    assert status == 200 and "rportd_event_loop_lag_seconds" in text

    off = await make_server("off", metrics={"enabled": False})
    status, _, _ = await get_text(http, metrics_url(off), ADMIN)
    assert status == 404


async def test_refused_client_connections_are_counted_by_reason(
    server: RportServer, http: aiohttp.ClientSession
) -> None:
    bad = RportClientSim(
        SimulatorConfig(
            server=client_url(server),
            auth="client1:wrong",
            client_id="c2",
            connect_jitter=0.0,
            backoff_min=0.2,
            backoff_max=1.0,
        )
    )
    try:
        await bad.connect_once()
    except Exception:
        pass
    finally:
        await bad.stop()
    _, _, text = await get_text(http, metrics_url(server), ADMIN)
    assert value(text, "rportd_client_connects_refused_total", reason="auth") == 1
    assert value(text, "rportd_login_failures_total", listener="clients") == 1
    assert value(text, "rportd_client_connects_total") == 0
