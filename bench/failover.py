"""Failover time with and without the etcd coordinator.

Starts a primary and a secondary as real processes (and, for the coordinator
run, a 3-member etcd cluster from /usr/bin/etcd), connects simulated clients
configured as upstream's (main server, one fallback), kills the primary with
SIGKILL and reports how long until the secondary serves and until every client
is registered there::

    python -m bench.failover --clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.etcd import EtcdCluster
from tests.ha.cluster import CLIENT_AUTH, Cluster
from tests.simulator import RportClientSim, SimulatorConfig


async def wait_clients(cluster: Cluster, count: int, *, on_secondary: bool) -> None:
    node = cluster.secondary if on_secondary else cluster.primary
    while True:
        try:
            if int((await node.status())["clients"]) >= count:
                return
        except (OSError, AssertionError):
            pass
        await asyncio.sleep(0.2)


async def run(clients: int, coordinator: bool) -> dict[str, Any]:
    """One failover; the figures in seconds after the kill."""
    with tempfile.TemporaryDirectory(prefix="rportd-failover-") as tmp:
        root = Path(tmp)
        etcd = EtcdCluster(root / "etcd") if coordinator else None
        cluster = Cluster(root)
        sims: list[RportClientSim] = []
        try:
            if etcd is not None:
                await etcd.start()
                for node in cluster.nodes:
                    node.extra = {"ha": {"coordinator": etcd.endpoints, "coordinator_ttl": "3s"}}
            await cluster.start()
            await cluster.primary.wait_state("active")
            sims = [
                RportClientSim(
                    SimulatorConfig(
                        server=cluster.primary.client_url,
                        fallback_servers=[cluster.secondary.client_url],
                        auth=":".join(CLIENT_AUTH),
                        client_id=f"bench-{i}",
                        server_switchback_interval=30.0,
                    )
                )
                for i in range(clients)
            ]
            for sim in sims:
                await sim.start()
            await wait_clients(cluster, clients, on_secondary=False)
            await asyncio.sleep(2.0)  # the secondary learns the fleet
            cluster.primary.kill()
            killed = time.monotonic()
            await cluster.secondary.wait_state("active", timeout=120)
            serving = time.monotonic() - killed
            await wait_clients(cluster, clients, on_secondary=True)
            all_back = time.monotonic() - killed
            return {
                "coordinator": coordinator,
                "clients": clients,
                "secondary_serving_s": round(serving, 1),
                "all_clients_served_s": round(all_back, 1),
            }
        finally:
            for sim in sims:
                await sim.stop()
            await cluster.close()
            if etcd is not None:
                await etcd.close()


async def main_async(clients: int, runs: int) -> list[dict[str, Any]]:
    results = []
    for _ in range(runs):
        for coordinator in (False, True):
            results.append(await run(clients, coordinator))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.clients, args.runs))
    print(f"{'mode':<14} {'clients':>7} {'secondary serves':>17} {'all clients back':>17}")
    for r in results:
        mode = "etcd" if r["coordinator"] else "two nodes"
        print(
            f"{mode:<14} {r['clients']:>7} {r['secondary_serving_s']:>15.1f} s "
            f"{r['all_clients_served_s']:>15.1f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
