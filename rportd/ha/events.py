"""Recent HA events of a node (takeovers, hand-overs, fencing) for its status page.

A small ring buffer per controller, fed by the controller's state changes; it is
kept beside the controller (a weak mapping) so that the controller needs only
one call to :func:`record`.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

EVENTS_KEPT = 200


class NodeFacts(Protocol):
    """What an event notes about the node (the HA controller has these)."""

    @property
    def role(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    state: str


@dataclass(frozen=True)
class HAEvent:
    """One state change of a node."""

    at: float  # Unix time
    role: str
    epoch: int
    previous: str  # state before
    state: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_EVENTS: weakref.WeakKeyDictionary[NodeFacts, deque[HAEvent]] = weakref.WeakKeyDictionary()


def record(node: NodeFacts, state: str, reason: str) -> None:
    """Note that ``node`` turns ``state`` (call before it changes its ``state``)."""
    events = _EVENTS.get(node)
    if events is None:
        events = _EVENTS[node] = deque(maxlen=EVENTS_KEPT)
    events.append(HAEvent(time.time(), node.role, node.epoch, node.state, state, reason))


def recent(node: NodeFacts) -> list[HAEvent]:
    """The node's events, oldest first (at most :data:`EVENTS_KEPT`)."""
    return list(_EVENTS.get(node, ()))
