"""HA with real processes: standby refusal, kill -9 failover, switchback, fencing, promotion."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha.cluster import CLIENT_AUTH, REPO, Cluster, Node
from tests.simulator import RportClientSim, SimulatorConfig, http_request

pytestmark = pytest.mark.ha


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


async def wait_registered_on(sim: RportClientSim, node: Node, timeout: float) -> float:
    """Wait until ``sim`` is registered on ``node``; return how long that took."""
    target = node.client_url.replace("http://", "ws://")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sim.registered and sim.current_server_url == target:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{sim.config.client_id} not registered on {node.name}: {sim.events[-5:]}")


async def echo_through_tunnel(node: Node, client_id: str) -> bytes:
    """Open a tunnel on ``node`` to a local echo server through ``client_id``; echo."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5000))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        status, body = await node.api(
            "PUT", f"/clients/{client_id}/tunnels", params={"remote": f"127.0.0.1:{port}"}
        )
        assert status == 200, body
        reader, writer = await asyncio.open_connection("127.0.0.1", int(body["data"]["lport"]))
        writer.write(b"ping " * 1000)
        data = await asyncio.wait_for(reader.readexactly(5000), 10)
        writer.close()
        return data
    finally:
        server.close()


async def wait_job(node: Node, client_id: str, jid: str, timeout: float = 15.0) -> Any:
    """The job once it has finished on ``node`` (as its API shows it)."""
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = await node.api("GET", f"/clients/{client_id}/commands/{jid}")
        if status == 200 and body["data"]["status"] != "running":
            return body["data"]
        await asyncio.sleep(0.1)
    raise TimeoutError(f"job {jid} not finished on {node.name}: {body}")


def failover_client(cluster: Cluster, client_id: str) -> RportClientSim:
    """A simulated client configured as upstream's: main server plus one fallback."""
    return RportClientSim(
        SimulatorConfig(
            server=cluster.primary.client_url,
            fallback_servers=[cluster.secondary.client_url],
            auth=":".join(CLIENT_AUTH),
            client_id=client_id,
            connect_jitter=1.0,
            server_switchback_interval=3.0,
        )
    )


async def test_standby_refuses_clients_and_says_why(cluster: Cluster) -> None:
    sim = RportClientSim(
        SimulatorConfig(server=cluster.secondary.client_url, auth=":".join(CLIENT_AUTH))
    )
    try:
        result = await sim.connect_once()
    finally:
        await sim.stop()
    # The secondary lets the client log in and holds its request for knock_hold (the
    # knock is evidence for a takeover), then refuses it, saying who serves.
    assert (result.ok, result.stage) == (False, "new_connection")
    assert "standby" in result.error and cluster.primary.api_url in result.error
    node = await cluster.secondary.status()
    assert node["state"] == "standby" and node["role"] == "secondary"
    assert node["admitting"] is False
    assert node["evidence"]["knocked"] == 1
    assert (await cluster.primary.status())["admitting"] is True


async def test_kill_primary_then_clients_fail_over_and_switch_back(cluster: Cluster) -> None:
    sims = [failover_client(cluster, f"ha-client-{i}") for i in range(3)]
    others: list[RportClientSim] = []
    try:
        for sim in sims:
            await sim.start()
        for sim in sims:
            await wait_registered_on(sim, cluster.primary, 15)
        assert (await cluster.primary.status())["clients"] == 3
        # The secondary knows the fleet it would take over (from the heartbeats).
        for _ in range(50):
            if (await cluster.secondary.status())["evidence"]["fleet"] == 3:
                break
            await asyncio.sleep(0.1)
        assert (await cluster.secondary.status())["evidence"]["fleet"] == 3

        cluster.primary.kill()
        killed = time.monotonic()
        # Clients retry after their backoff (5 s): the main server is gone, so they
        # knock at the secondary, which holds them; once most of the fleet has
        # knocked for FRESH_WINDOW (5 s) it takes over and lets them in.
        await cluster.secondary.wait_state("active", timeout=30)
        takeover = time.monotonic() - killed
        for sim in sims:
            await wait_registered_on(sim, cluster.secondary, 20)
        failover = time.monotonic() - killed
        assert failover < 5.0 + 1.0 + 5.0 + 2.0 + 4.0
        assert (await cluster.secondary.status())["clients"] == 3
        # Commands run through the secondary while it serves the clients.
        status, body = await cluster.secondary.api(
            "POST", "/clients/ha-client-0/commands", json={"command": "/usr/bin/echo hi"}
        )
        assert status == 200, body
        jid = body["data"]["jid"]
        job = await wait_job(cluster.secondary, "ha-client-0", jid)
        assert (job["status"], job["result"]["stdout"]) == ("successful", "hi\n")
        # ... and so do tunnels.
        assert await echo_through_tunnel(cluster.secondary, "ha-client-1") == b"ping " * 1000
        # A client that only knows the secondary shows up there during the outage ...
        lonely = RportClientSim(
            SimulatorConfig(
                server=cluster.secondary.client_url,
                auth=":".join(CLIENT_AUTH),
                client_id="only-on-secondary",
                connect_jitter=0.0,
                tags=["outage"],
            )
        )
        others = [lonely]
        await lonely.start()
        await wait_registered_on(lonely, cluster.secondary, 10)

        await cluster.primary.start()
        restarted = time.monotonic()
        # The first switchback attempt (every 3 s) knocks at the primary: it asks
        # the secondary to step down, then serves.
        await cluster.secondary.wait_state("draining", timeout=10)
        for sim in sims:
            await wait_registered_on(sim, cluster.primary, 15)
        switchback = time.monotonic() - restarted
        assert switchback < 3.0 + 1.0 + 5.0
        await cluster.secondary.wait_state("standby", timeout=15)
        # ... and its record flows back to the primary once it is back.
        for _ in range(100):
            status, body = await cluster.primary.api("GET", "/clients/only-on-secondary")
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, body
        assert body["data"]["tags"] == ["outage"]
        assert body["data"]["connection_state"] == "disconnected"
        # ... and so does the job run on the secondary.
        job = await wait_job(cluster.primary, "ha-client-0", jid)
        assert (job["status"], job["result"]["stdout"]) == ("successful", "hi\n")
        print(
            f"takeover {takeover:.1f}s, clients on the secondary {failover:.1f}s after the kill, "
            f"back on the primary {switchback:.1f}s after its restart"
        )
    finally:
        for sim in sims + others:
            await sim.stop()


async def test_second_primary_with_equal_epoch_is_fenced(cluster: Cluster, tmp_path: Path) -> None:
    rival = cluster.add(Node("rival", tmp_path / "rival", "primary", [cluster.primary.api_url]))
    await rival.start()
    status = await rival.wait_state("fenced", timeout=10)
    assert "same epoch" in status["reason"] and cluster.primary.api_url in status["reason"]
    assert (await cluster.primary.status())["state"] == "active"
    _, headers, _ = await http_request(rival.client_url, "HEAD")
    assert "fenced" in headers["Via"]
    log = rival.log_path.read_text()
    assert "fenced" in log and "same epoch" in log


async def test_promote_then_old_primary_demotes_itself(cluster: Cluster) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rportd",
        "ha",
        "promote",
        "-c",
        str(cluster.secondary.config_path),
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "role:      primary" in out.decode()
    status = await cluster.secondary.status()
    assert (status["role"], status["state"], status["epoch"]) == ("primary", "active", 2)

    # The old primary is running with epoch 1: it sees the higher epoch and demotes itself.
    # (A primary can be standby for a moment before that, without clients to serve.)
    demoted = await cluster.primary.wait_state("standby", timeout=10, role="secondary")
    assert demoted["primary"] == cluster.secondary.api_url
    # ... and stays demoted across a restart.
    cluster.primary.kill()
    await cluster.primary.wait_exit()
    await cluster.primary.start()
    again = await cluster.primary.wait_state("standby", timeout=10)
    assert again["role"] == "secondary" and again["epoch"] == 2

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rportd",
        "ha",
        "status",
        "-c",
        str(cluster.primary.config_path),
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert "role:      secondary" in out.decode() and cluster.secondary.api_url in out.decode()
