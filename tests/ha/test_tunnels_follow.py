"""A client's API tunnels follow it to the secondary on failover and back to the primary."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha.cluster import Cluster, Node
from tests.ha.test_failover import failover_client, wait_registered_on

pytestmark = pytest.mark.ha

CLIENT = "tunnel-client"
OPTIONS = {"acl": "127.0.0.1", "idle-timeout-minutes": "30", "auto-close": "2h", "name": "echo"}
KEPT = ("rhost", "rport", "protocol", "acl", "idle_timeout_minutes", "auto_close", "name", "owner")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    # Both nodes may use the primary's ports (the secondary more): on one host, a port
    # is free on the secondary once the primary is gone.
    cluster.secondary.extra = {"server": {"used_ports": ["33000-34999"]}}
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


async def echo_through(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"ping " * 1000)
        return await asyncio.wait_for(reader.readexactly(5000), 10)
    finally:
        writer.close()


async def tunnels_on(node: Node) -> list[dict[str, Any]]:
    status, body = await node.api("GET", f"/clients/{CLIENT}")
    assert status == 200, body
    return list(body["data"]["tunnels"])


async def wait_caught_up(cluster: Cluster) -> None:
    for _ in range(100):
        primary, secondary = await cluster.primary.status(), await cluster.secondary.status()
        if secondary["replication"]["position"] == primary["position"]:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the secondary did not catch up")


async def create(node: Node, remote: str, **options: str) -> dict[str, Any]:
    status, body = await node.api(
        "PUT", f"/clients/{CLIENT}/tunnels", params={"remote": remote, **options}
    )
    assert status == 200, body
    return dict(body["data"])


async def delete(node: Node, tunnel: dict[str, Any]) -> None:
    status, body = await node.api("DELETE", f"/clients/{CLIENT}/tunnels/{tunnel['id']}")
    assert status == 204, body


async def settled_tunnels(node: Node, count: int) -> list[dict[str, Any]]:
    """The client's tunnels on ``node`` once there are ``count`` (a sync back may follow)."""
    tunnels: list[dict[str, Any]] = []
    for _ in range(100):
        tunnels = await tunnels_on(node)
        if len(tunnels) == count:
            return tunnels
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {count} tunnels on {node.name}: {tunnels}")


async def test_api_tunnels_follow_their_client_to_the_secondary_and_back(
    cluster: Cluster, echo_port: int
) -> None:
    sim = failover_client(cluster, CLIENT)
    remote = f"127.0.0.1:{echo_port}"
    try:
        await sim.start()
        await wait_registered_on(sim, cluster.primary, 15)
        made = await create(cluster.primary, remote, **OPTIONS)
        # Deleted on the primary: must not come back on the secondary.
        await delete(cluster.primary, await create(cluster.primary, remote))
        # Deleted on the secondary: must not come back on the primary.
        doomed = await create(cluster.primary, remote, acl="127.0.0.0/8")
        assert await echo_through(int(made["lport"])) == b"ping " * 1000
        await wait_caught_up(cluster)

        cluster.primary.kill()
        # The secondary takes over once the client knocks there (see rportd/ha/rules.py).
        await cluster.secondary.wait_state("active", timeout=30)
        await wait_registered_on(sim, cluster.secondary, 20)
        there = {t["acl"]: t for t in await tunnels_on(cluster.secondary)}
        assert set(there) == {"127.0.0.1", "127.0.0.0/8"}
        kept = there["127.0.0.1"]
        assert {k: kept[k] for k in KEPT} == {k: made[k] for k in KEPT}
        assert kept["lport_random"] is True
        assert kept["lport"] == made["lport"]  # random, and free here: the same port
        assert await echo_through(int(kept["lport"])) == b"ping " * 1000
        await delete(cluster.secondary, there[doomed["acl"]])
        # Made on the secondary while it serves: follows the client back.
        extra = await create(cluster.secondary, remote, acl="127.0.0.1/32")

        await cluster.primary.start()
        await wait_registered_on(sim, cluster.primary, 15)
        back = {t["acl"]: t for t in await settled_tunnels(cluster.primary, 2)}
        assert set(back) == {"127.0.0.1", "127.0.0.1/32"}
        assert {k: back["127.0.0.1"][k] for k in KEPT} == {k: made[k] for k in KEPT}
        # The secondary may still hold the old port while the client switches over.
        assert 33000 <= int(back["127.0.0.1"]["lport"]) <= 33999
        assert await echo_through(int(back["127.0.0.1"]["lport"])) == b"ping " * 1000
        assert {k: back["127.0.0.1/32"][k] for k in KEPT} == {k: extra[k] for k in KEPT}
        assert await echo_through(int(back["127.0.0.1/32"]["lport"])) == b"ping " * 1000
    finally:
        await sim.stop()
