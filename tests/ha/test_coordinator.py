"""Leadership through a real 3-member etcd cluster, with members lost and nodes cut off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from rportd.ha.coordinator import Coordinator, CoordinatorUnavailable
from tests.etcd import EtcdCluster

pytestmark = pytest.mark.ha

TTL = 2.0  # the smallest etcd grants with the test cluster's 1 s election timeout
REQUEST_TIMEOUT = 0.3


class Watched:
    """A coordinator and the (monotonic time, holding) of each on_change call."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator
        self.flips: list[tuple[float, bool]] = []
        self.lost = asyncio.Event()
        coordinator.on_change(self._record)

    def _record(self) -> None:
        holding = self.c.holding()
        self.flips.append((time.monotonic(), holding))
        if not holding:
            self.lost.set()

    def lost_at(self) -> float | None:
        return next((at for at, holding in self.flips if not holding), None)


Factory = Callable[..., Watched]


@pytest.fixture
async def coordinators() -> AsyncIterator[Factory]:
    made: list[Coordinator] = []

    def make(
        endpoints: list[str],
        node_id: str,
        ttl: float = TTL,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> Watched:
        coordinator = Coordinator(endpoints, node_id, ttl=ttl, request_timeout=request_timeout)
        made.append(coordinator)
        return Watched(coordinator)

    yield make
    for coordinator in made:
        await coordinator.stop()


async def acquire_eventually(w: Watched, value: str, timeout: float = 15.0) -> float:
    """Retry try_acquire until it succeeds; the monotonic time the winning call began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        began = time.monotonic()
        if await w.c.try_acquire(value):
            return began
        await asyncio.sleep(0.05)
    raise AssertionError(f"{value} never got leadership: {w.c.last_error}")


async def test_one_holder_then_the_next_with_a_higher_epoch(
    etcd: EtcdCluster, coordinators: Factory
) -> None:
    a, b = coordinators(etcd.endpoints, "a"), coordinators(etcd.endpoints, "b")
    await a.c.start()
    await b.c.start()
    assert await b.c.leader() is None
    assert await a.c.try_acquire("node-a")
    assert a.c.holding()
    assert a.c.epoch > 0
    assert [holding for _, holding in a.flips] == [True]
    assert await a.c.try_acquire("node-a")  # idempotent while held

    assert not await b.c.try_acquire("node-b")
    assert not b.c.holding()
    assert "node-a" in b.c.last_error
    assert await b.c.leader() == ("node-a", a.c.epoch)

    # Renewals keep it past the TTL.
    await asyncio.sleep(TTL * 1.5)
    assert a.c.holding()
    assert not await b.c.try_acquire("node-b")

    await a.c.resign()
    assert not a.c.holding()
    assert [holding for _, holding in a.flips] == [True, False]
    assert await b.c.try_acquire("node-b")  # at once: the lease was revoked
    assert b.c.epoch > a.c.epoch
    assert await a.c.leader() == ("node-b", b.c.epoch)
    assert not await a.c.try_acquire("node-a")

    await b.c.stop()  # stop revokes too
    assert not b.c.holding()
    assert await a.c.try_acquire("node-a")
    assert a.c.epoch > b.c.epoch


@pytest.mark.parametrize("victim", ["follower", "leader"])
async def test_losing_one_etcd_member_changes_nothing(
    etcd: EtcdCluster, coordinators: Factory, victim: str
) -> None:
    # Losing etcd's leader costs an election (1-2 s with a 1 s election timeout), which
    # the holder must outlast: renewals are due at TTL/3 and the deadline is at 0.8 TTL.
    ttl = 8.0 if victim == "leader" else TTL
    leader = await etcd.leader()
    lost = leader if victim == "leader" else (leader + 1) % 3
    order = [lost] + [i for i in range(3) if i != lost]  # the holder asks the victim first
    a = coordinators([etcd.endpoints[i] for i in order], "a", ttl=ttl)
    b = coordinators(etcd.endpoints, "b", ttl=ttl)
    await a.c.start()
    await b.c.start()
    assert await a.c.try_acquire("node-a")
    epoch = a.c.epoch

    etcd.members[lost].kill()
    killed_at = time.monotonic()
    # Held throughout, until a renewal sent after the kill (and any election) succeeded.
    while True:
        assert a.c.holding(), a.c.last_error
        now, deadline = time.monotonic(), a.c.deadline
        assert deadline is not None
        if now > killed_at + 3.0 and deadline > killed_at + ttl * 0.8:
            break
        assert now < killed_at + ttl + 3.0, "no renewal got through the remaining members"
        await asyncio.sleep(0.1)
    assert [holding for _, holding in a.flips] == [True]
    assert not await b.c.try_acquire("node-b")
    assert await b.c.leader() == ("node-a", epoch)

    await etcd.restart(lost)
    assert a.c.holding()
    assert a.c.epoch == epoch


@pytest.mark.parametrize("direction", ["both", "to_target", "from_target"])
async def test_cut_off_holder_stops_before_another_node_takes_over(
    etcd: EtcdCluster, coordinators: Factory, direction: str
) -> None:
    """With "from_target" the holder's renewals still reach etcd; only the answers are lost."""
    a_links = await etcd.proxied()
    a = coordinators(a_links.endpoints, "a")
    b = coordinators(etcd.endpoints, "b")
    await a.c.start()
    await b.c.start()
    assert await a.c.try_acquire("node-a")
    first_epoch = a.c.epoch

    # Cut from two members: the third still renews it.
    a_links.cut(0, direction)
    a_links.cut(1, direction)
    await asyncio.sleep(TTL * 1.5)
    assert a.c.holding(), a.c.last_error
    assert [holding for _, holding in a.flips] == [True]

    # Cut from all: it must stop holding before b can take the key.
    a_links.cut(None, direction)
    cut_at = time.monotonic()
    b_began = await acquire_eventually(b, "node-b")
    a_lost = a.lost_at()
    assert a_lost is not None, "the cut-off holder never reported losing leadership"
    assert cut_at < a_lost < b_began
    assert not a.c.holding()
    assert "could not renew" in a.c.last_error
    assert b.c.epoch > first_epoch

    with pytest.raises(CoordinatorUnavailable):
        await a.c.leader()
    assert not await a.c.try_acquire("node-a")
    assert "cannot take leadership" in a.c.last_error

    a_links.heal()
    assert not await a.c.try_acquire("node-a")
    assert await a.c.leader() == ("node-b", b.c.epoch)
    print(
        f"\ncut {direction}: holder stopped {a_lost - cut_at:.2f} s after the cut, "
        f"the other took over {b_began - a_lost:.2f} s later"
    )


async def test_without_a_quorum_nobody_holds(etcd: EtcdCluster, coordinators: Factory) -> None:
    a = coordinators(etcd.endpoints, "a")
    b = coordinators(etcd.endpoints, "b")
    await a.c.start()
    await b.c.start()
    assert await a.c.try_acquire("node-a")
    etcd.members[1].kill()
    etcd.members[2].kill()
    await asyncio.wait_for(a.lost.wait(), TTL * 2)  # not holding without an etcd quorum
    assert not a.c.holding()
    assert not await b.c.try_acquire("node-b")
    with pytest.raises(CoordinatorUnavailable):
        await b.c.leader()

    await etcd.restart(1)
    await etcd.restart(2)
    await acquire_eventually(b, "node-b")
    assert b.c.epoch > a.c.epoch
    assert not await a.c.try_acquire("node-a")


async def test_paused_holder_loses_leadership(etcd: EtcdCluster, coordinators: Factory) -> None:
    a = coordinators(etcd.endpoints, "a")
    b = coordinators(etcd.endpoints, "b")
    await a.c.start()
    await b.c.start()
    assert await a.c.try_acquire("node-a")
    # The whole event loop stalls (a GC pause, a frozen VM): no renewal can be sent.
    time.sleep(TTL + 0.5)  # noqa: ASYNC251 - the stall is the point
    assert not a.c.holding()  # judged on the monotonic clock, before any callback ran
    await acquire_eventually(b, "node-b")
    assert b.c.epoch > a.c.epoch
    assert not a.c.holding()
    assert [holding for _, holding in a.flips] == [True, False]
    assert not await a.c.try_acquire("node-a")
