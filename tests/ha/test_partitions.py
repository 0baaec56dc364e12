"""The README's fault table, two nodes without coordinator: real processes, fault proxies.

Every link goes through a :class:`FaultProxy`: the HA link both ways, and each
node's client listener. Clients are simulator clients configured as upstream's
(main server, one fallback, switchback) with a short keepalive so that they notice
a silent server. An :class:`AdmissionChecker` samples both nodes' admission the
whole time; no scenario may have both admitting at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster, EtcdProxies
from tests.faultproxy import FaultProxy
from tests.ha.admission import AdmissionChecker
from tests.ha.cluster import CLIENT_AUTH, Node, free_port
from tests.simulator import RportClientSim, SimulatorConfig

pytestmark = pytest.mark.ha

CLIENTS = 3


class ProxiedPair:
    """A primary and a secondary whose every link runs through a fault proxy."""

    def __init__(self, root: Path, coordinators: tuple[list[str], list[str]] | None = None) -> None:
        """``coordinators``: etcd endpoints for the primary and for the secondary."""
        self.root = root
        self.coordinators = coordinators
        p_client, p_api, s_client, s_api = (free_port() for _ in range(4))
        self.p_api = FaultProxy("127.0.0.1", p_api)  # the secondary's way to the primary
        self.s_api = FaultProxy("127.0.0.1", s_api)  # the primary's way to the secondary
        self.p_clients = FaultProxy("127.0.0.1", p_client)
        self.s_clients = FaultProxy("127.0.0.1", s_client)
        self.ports = (p_client, p_api, s_client, s_api)
        self.sims: list[RportClientSim] = []

    @property
    def proxies(self) -> list[FaultProxy]:
        return [self.p_api, self.s_api, self.p_clients, self.s_clients]

    async def start(self) -> None:
        for proxy in self.proxies:
            await proxy.start()
        p_client, p_api, s_client, s_api = self.ports
        p_extra: dict[str, dict[str, object]] = {}
        s_extra: dict[str, dict[str, object]] = {}
        if self.coordinators is not None:
            # 5 s: about five etcd election timeouts (1 s in tests/etcd.py), so that the
            # loss of etcd's leader never costs the holder its lease.
            p_extra = {"ha": {"coordinator": self.coordinators[0], "coordinator_ttl": "5s"}}
            s_extra = {"ha": {"coordinator": self.coordinators[1], "coordinator_ttl": "5s"}}
        self.primary = Node(
            "primary",
            self.root / "primary",
            "primary",
            [self.s_api.url],
            "",
            p_extra,
            p_client,
            p_api,
        )
        self.secondary = Node(
            "secondary",
            self.root / "secondary",
            "secondary",
            [self.p_api.url],
            self.p_api.url,
            s_extra,
            s_client,
            s_api,
        )
        await self.primary.start()
        await self.secondary.start()
        await self.primary.wait_state("active")
        await self.secondary.wait_state("standby")

    def checker(self) -> AdmissionChecker:
        return AdmissionChecker(
            {"primary": self.primary.api_url, "secondary": self.secondary.api_url}
        )

    def client(self, client_id: str, *, only_secondary: bool = False) -> RportClientSim:
        main = self.s_clients if only_secondary else self.p_clients
        sim = RportClientSim(
            SimulatorConfig(
                server=main.url,
                fallback_servers=[] if only_secondary else [self.s_clients.url],
                auth=":".join(CLIENT_AUTH),
                client_id=client_id,
                connect_jitter=1.0,
                server_switchback_interval=3.0,
                keep_alive=2.0,
                keep_alive_jitter=0.5,
                keep_alive_timeout=2.0,
            )
        )
        self.sims.append(sim)
        return sim

    async def fleet_on_primary(self) -> list[RportClientSim]:
        sims = [self.client(f"fleet-{i}") for i in range(CLIENTS)]
        for sim in sims:
            await sim.start()
        await wait_clients(self.primary, CLIENTS, 20)
        # The secondary learns the fleet from the heartbeats.
        for _ in range(50):
            if (await self.secondary.status())["evidence"]["fleet"] == CLIENTS:
                break
            await asyncio.sleep(0.1)
        return sims

    def cut_ha_link(self) -> None:
        self.p_api.cut()
        self.s_api.cut()

    def heal_all(self) -> None:
        for proxy in self.proxies:
            proxy.heal()

    async def close(self) -> None:
        for sim in self.sims:
            await sim.stop()
        for node in (self.primary, self.secondary):
            node.kill()
        for node in (self.primary, self.secondary):
            await node.wait_exit()
        for proxy in self.proxies:
            await proxy.stop()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[ProxiedPair]:
    pair = ProxiedPair(tmp_path)
    try:
        await pair.start()
        yield pair
    finally:
        await pair.close()


async def wait_clients(node: Node, count: int, timeout: float) -> float:
    """Seconds until ``node`` lists ``count`` connected clients."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if (await node.status())["clients"] == count:
                return time.monotonic() - start
        except (OSError, AssertionError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{node.name} has not {count} clients after {timeout}s:\n{node.tail(20)}")


async def test_ha_link_cut_clients_reach_both(pair: ProxiedPair) -> None:
    """HA link cut: the primary keeps its clients; the secondary never takes over."""
    await pair.fleet_on_primary()
    async with pair.checker() as checker:
        pair.cut_ha_link()
        # A client that can reach only the secondary knocks there during the cut.
        lonely = pair.client("lonely", only_secondary=True)
        await lonely.start()
        await asyncio.sleep(15)
        secondary = await pair.secondary.status()
        assert secondary["state"] == "standby" and not secondary["admitting"]
        assert secondary["evidence"]["link_up"] is False
        assert secondary["evidence"]["waiting"] == 0  # lonely knocks, but is not of the fleet
        primary = await pair.primary.status()
        assert primary["admitting"] and primary["clients"] == CLIENTS
        assert not lonely.registered
        pair.heal_all()
        await asyncio.sleep(2)
    print("HA link cut:\n" + checker.timeline())
    assert checker.both_admitting_seconds == 0.0
    assert (await pair.primary.status())["clients"] == CLIENTS


async def test_clients_cut_from_primary_are_served_by_secondary(pair: ProxiedPair) -> None:
    """Client side cut, HA link up: the primary hands its clients over."""
    sims = await pair.fleet_on_primary()
    async with pair.checker() as checker:
        cut = time.monotonic()
        pair.p_clients.cut()  # established connections go silent ...
        pair.p_clients.refuse()  # ... and the port is closed for new ones
        served = await wait_clients(pair.secondary, CLIENTS, 60)
        primary = await pair.primary.status()
        assert not primary["admitting"] and primary["clients"] == 0
        assert "handed clients over" in primary["reason"]
        # Heal: clients switch back to the primary after the hold-off.
        pair.heal_all()
    print(f"client side cut: all {CLIENTS} clients on the secondary {served:.1f}s after the cut")
    print(checker.timeline())
    assert checker.both_admitting_seconds == 0.0
    assert time.monotonic() - cut < 60
    assert all(sim.registered for sim in sims)


async def test_primary_isolated_then_back(pair: ProxiedPair) -> None:
    """Primary cut from the secondary and from its clients: it stops; the secondary serves."""
    await pair.fleet_on_primary()
    async with pair.checker() as checker:
        cut = time.monotonic()
        pair.cut_ha_link()
        pair.p_clients.cut()
        pair.p_clients.refuse()
        served = await wait_clients(pair.secondary, CLIENTS, 60)
        primary = await pair.primary.status()
        assert not primary["admitting"]
        assert "lost the peer and the clients" in primary["reason"]
        pair.heal_all()
        # One serving node after the heal; clients switch back to the primary.
        back = time.monotonic()
        await wait_clients(pair.primary, CLIENTS, 30)
        switchback = time.monotonic() - back
    print(
        f"primary isolated: clients on the secondary {served:.1f}s after the cut, "
        f"back on the primary {switchback:.1f}s after the heal ({time.monotonic() - cut:.0f}s)"
    )
    print(checker.timeline())
    assert checker.both_admitting_seconds == 0.0


async def test_primary_hung_then_resumes(pair: ProxiedPair) -> None:
    """SIGSTOP for a while, then SIGCONT: never two nodes admitting.

    A hung primary still accepts TCP connections in its kernel, so clients wait on
    its WebSocket handshake (the rport client allows 5 minutes) and do not knock at
    the secondary meanwhile: the secondary must not take over on the silence alone.
    """
    await pair.fleet_on_primary()
    assert pair.primary.process is not None
    async with pair.checker() as checker:
        pair.primary.process.send_signal(19)  # SIGSTOP
        await asyncio.sleep(12)
        secondary = await pair.secondary.status()
        assert secondary["state"] == "standby" and not secondary["admitting"]
        assert secondary["evidence"]["link_up"] is False
        pair.primary.process.send_signal(18)  # SIGCONT
        back = await wait_clients(pair.primary, CLIENTS, 30)
    print(f"primary hung 12s: its clients served by it again {back:.1f}s after SIGCONT")
    print(checker.timeline())
    assert checker.both_admitting_seconds == 0.0


@pytest.fixture
async def etcd_pair(
    tmp_path: Path, etcd: EtcdCluster
) -> AsyncIterator[tuple[ProxiedPair, EtcdProxies]]:
    """A pair with a coordinator; the primary reaches each etcd member through a proxy."""
    primary_way = await etcd.proxied()
    pair = ProxiedPair(tmp_path / "pair", (primary_way.endpoints, etcd.endpoints))
    try:
        await pair.start()
        yield pair, primary_way
    finally:
        await pair.close()
        for proxy in primary_way.proxies:
            await proxy.stop()


async def test_coordinator_member_lost_changes_nothing(
    etcd_pair: tuple[ProxiedPair, EtcdProxies], etcd: EtcdCluster
) -> None:
    pair, _ = etcd_pair
    await pair.fleet_on_primary()
    status = await pair.primary.status()
    assert status["mode"] == "coordinator" and status["coordinator"]["holding"]
    assert status["partition_safe"].startswith("yes")
    async with pair.checker() as checker:
        etcd.members[(await etcd.leader())].kill()  # even the raft leader
        await asyncio.sleep(8)
        assert (await pair.primary.status())["admitting"]
        assert (await pair.primary.status())["clients"] == CLIENTS
    assert checker.both_admitting_seconds == 0.0
    assert checker.intervals("secondary") == []


async def test_coordinator_unreachable_leader_stops_before_the_other_starts(
    etcd_pair: tuple[ProxiedPair, EtcdProxies],
) -> None:
    """The primary cut from every etcd member (HA link and clients fine)."""
    pair, primary_way = etcd_pair
    sims = await pair.fleet_on_primary()
    epoch_before = (await pair.primary.status())["coordinator"]["epoch"]
    async with pair.checker() as checker:
        cut = time.monotonic()
        primary_way.cut()
        served = await wait_clients(pair.secondary, CLIENTS, 60)
        secondary = await pair.secondary.status()
        assert secondary["coordinator"]["holding"]
        assert secondary["coordinator"]["epoch"] > epoch_before
        primary = await pair.primary.status()
        assert not primary["admitting"] and "coordinator lease" in primary["reason"]
    print(f"primary cut from etcd: clients on the secondary {served:.1f}s after the cut")
    print(checker.timeline())
    assert checker.both_admitting_seconds == 0.0
    stopped = checker.intervals("primary")[-1][1]
    started = checker.intervals("secondary")[0][0]
    assert stopped <= started
    assert time.monotonic() - cut < 60 and all(sim.registered for sim in sims)
