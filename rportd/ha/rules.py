"""Who may serve clients: the HA rules, one per row of the README's fault table.

A node serves clients (admits them) only with evidence that no other node does.
Two kinds of evidence exist:

* **The coordinator** (``[ha] coordinator``, etcd): the node that holds the
  leadership lease serves, nobody else. A holder that cannot renew stops on its
  own monotonic clock before etcd can hand the lease on.
* **The peer and the clients** (two nodes, no coordinator):

  - *the link*: a heartbeat exchanged with the peer within :data:`LINK_LEASE`
    seconds, in which the peer said whether it serves;
  - *fresh clients*: clients of the fleet connected here that answered a
    WebSocket ping sent less than :data:`FRESH_WINDOW` seconds ago;
  - *waiting clients*: authenticated clients of the fleet that knock here (their
    ``new_connection`` is held) for at least :data:`FRESH_WINDOW` seconds. A
    client knocking here is not connected to the other node, so after that
    window the other node no longer counts it fresh: the two counts never hold a
    majority of the same fleet at once.

  The fleet is the set of clients the serving node had when the link was last
  up; a majority is more than half of it.

The rules (``decide``) return what the node does next; the controller carries it
out. They are pure: facts in, one :class:`Step` out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

LINK_LEASE = 3.0
"""Seconds a heartbeat with the peer keeps the link up (probes run every 0.5 s)."""

FRESH_WINDOW = 5.0
"""Seconds a client's answered ping (or a knock) counts as evidence."""

PING_INTERVAL = 1.5
"""How often the serving node pings its clients while it needs evidence."""

KNOCK_WINDOW = 60.0
"""A client that knocked again within this many seconds is still knocking."""

HANDOVER_HOLDOFF = 60.0
"""After handing over, the primary takes clients back only after this long."""


class Step(enum.Enum):
    """What the node does next."""

    STAY = "stay"
    SERVE = "serve"  # start admitting clients (take over)
    STOP = "stop"  # stop admitting and disconnect: lost both the peer and the clients
    HAND_OVER = "hand_over"  # link up: stop here, then tell the peer to serve
    TAKE_BACK = "take_back"  # link up: ask the serving peer to step down, then serve
    YIELD = "yield"  # link up, both serve: the secondary drains


@dataclass(frozen=True)
class Facts:
    """What one node knows now (peer mode)."""

    primary: bool  # configured/promoted primary: the preferred server
    serving: bool  # admitting clients now
    link_up: bool  # a heartbeat with the peer within LINK_LEASE
    link_down_for: float  # seconds since the last heartbeat (0 while up)
    peer_serving: bool  # the peer said it serves (at the last heartbeat)
    peer_link_up: bool  # the peer said it hears from us too (so it will not take over)
    peer_waiting: int  # fleet clients knocking at the peer (reported by it)
    fleet: int  # fleet size
    fresh: int | None  # fleet clients fresh here; None while no ping round finished
    waiting: int  # fleet clients knocking here for at least FRESH_WINDOW
    knocked: int  # clients that knocked here recently (any, not aged)
    takeover_after: float  # [ha] takeover_after
    holdoff: bool  # a hand-over happened less than HANDOVER_HOLDOFF ago
    settling: bool = False  # serving for less than LINK_LEASE (peer facts may be stale)


def majority(count: int, fleet: int) -> bool:
    """More than half of the fleet (with no fleet, any one client)."""
    return count * 2 > fleet if fleet else count >= 1


def decide(f: Facts) -> tuple[Step, str]:
    """The next step of a node without coordinator, and why."""
    if f.serving:
        if f.link_up and f.peer_serving and not f.primary and not f.settling:
            return Step.YIELD, "the primary serves too"
        if f.link_up:
            # Clients cannot reach us but reach the peer: give them to it.
            if (
                f.fresh is not None
                and f.fleet > 0
                and majority(f.peer_waiting, f.fleet)
                and not majority(f.fresh, f.fleet)
            ):
                return Step.HAND_OVER, (
                    f"{f.peer_waiting} of {f.fleet} clients reach only the peer"
                )
            return Step.STAY, ""
        if f.link_down_for < LINK_LEASE:
            return Step.STAY, ""  # the peer still counts on us for a moment
        if f.fresh is None or majority(f.fresh, f.fleet):
            return Step.STAY, ""
        return Step.STOP, (
            f"lost the peer and the clients ({f.fresh} of {f.fleet} answer); "
            "not serving until either is back"
        )
    # Not serving.
    if f.link_up:
        if f.peer_serving:
            if f.primary and not f.holdoff and f.knocked >= 1:
                return Step.TAKE_BACK, "clients reach the primary again"
            return Step.STAY, ""
        if f.primary and not f.holdoff and f.peer_link_up:
            return Step.SERVE, "the peer does not serve: the primary serves"
        return Step.STAY, ""
    if f.link_down_for < max(f.takeover_after, LINK_LEASE + 1.0):
        return Step.STAY, ""
    if majority(f.waiting, f.fleet):
        return Step.SERVE, (
            f"peer unreachable for {f.link_down_for:.0f}s and {f.waiting} of "
            f"{f.fleet} clients can only reach this node"
        )
    return Step.STAY, ""


def serve_allowed(f: Facts) -> bool:
    """Whether a serving node may admit a client right now (checked per admission)."""
    if not f.serving:
        return False
    if f.link_up or f.link_down_for < LINK_LEASE:
        return True
    return f.fresh is None or majority(f.fresh, f.fleet)
