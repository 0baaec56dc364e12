"""The replication stream: a primary sends its change log; a secondary applies it.

Messages are JSON text frames: ``snapshot`` (every data set, when the follower
cannot continue from its position), ``changes`` (log entries in order) and
``heartbeat`` (position and epoch, every second while idle), and ``acks``
once the follower is on the primary's history: from then on the follower
answers ``ack`` with the position it has stored (what ``[ha] synchronous``
waits for).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from rportd.ha.changelog import Change, ChangeLog, Replica
from rportd.store.changes import ReplicatedDataset

log = logging.getLogger(__name__)

HEARTBEAT = 1.0
SILENCE_LIMIT = 3.0
BATCH = 500


class ReplicationRefused(Exception):
    """The primary would not serve us (or is not a primary we may follow)."""


async def needs_snapshot(changelog: ChangeLog, position: int, epoch_at: int) -> bool:
    """Whether a follower at ``position`` (logged in ``epoch_at``) must start over."""
    if position <= 0 or position > changelog.position:
        return True
    if position == changelog.position and epoch_at == changelog.last_epoch:
        return False
    entry = await changelog.entry(position)
    if entry is None or entry.epoch != epoch_at:
        return True
    oldest = await changelog.oldest()
    return oldest > position


async def take_snapshot(
    changelog: ChangeLog, datasets: Mapping[str, ReplicatedDataset]
) -> dict[str, Any]:
    async with changelog.frozen():
        return {
            "type": "snapshot",
            "position": changelog.position,
            "epoch": changelog.last_epoch,
            "datasets": {name: await ds.snapshot() for name, ds in datasets.items()},
        }


async def stream(
    ws: web.WebSocketResponse,
    changelog: ChangeLog,
    datasets: Mapping[str, ReplicatedDataset],
    position: int,
    epoch_at: int,
    follower: str = "",
) -> None:
    """Serve one follower until it goes away (or this node stops leading)."""
    if await needs_snapshot(changelog, position, epoch_at):
        snapshot = await take_snapshot(changelog, datasets)
        await ws.send_str(json.dumps(snapshot))
        position = int(snapshot["position"])
    await ws.send_str(json.dumps({"type": "acks"}))
    replica = changelog.attach_replica(follower)
    closed = asyncio.ensure_future(_read_acks(ws, changelog, replica))  # ends on close
    try:
        while not closed.done():
            changes = await changelog.read(position, BATCH)
            if changes:
                await ws.send_str(
                    json.dumps({"type": "changes", "changes": [c.to_json() for c in changes]})
                )
                position = changes[-1].seq
                continue
            if not await changelog.wait_beyond(position, HEARTBEAT):
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "heartbeat",
                            "position": changelog.position,
                            "epoch": changelog.last_epoch,
                        }
                    )
                )
    except (ConnectionResetError, aiohttp.ClientConnectionError):
        pass
    finally:
        closed.cancel()
        changelog.detach_replica(replica)


async def _read_acks(ws: web.WebSocketResponse, changelog: ChangeLog, replica: Replica) -> None:
    """Note the positions the follower says it has stored, until it goes away."""
    async for msg in ws:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        try:
            data = json.loads(msg.data)
            position = int(data["position"]) if data.get("type") == "ack" else None
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("replication: %s sent an unreadable message", replica.name)
            continue
        if position is not None:
            changelog.acknowledge(replica, min(position, changelog.position))


class Follower:
    """Applies one primary's stream to the local data sets and log."""

    def __init__(self, changelog: ChangeLog, datasets: Mapping[str, ReplicatedDataset]) -> None:
        self.changelog = changelog
        self.datasets = datasets
        self.leader_position = 0
        self.last_message = 0.0
        self.applied_at = 0.0
        self._acked = -1  # position last acknowledged; acks only once the primary asks

    @property
    def lag(self) -> int:
        return max(0, self.leader_position - self.changelog.position)

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Apply messages until the stream ends or falls silent."""
        self.last_message = time.monotonic()
        acks = False
        self._acked = -1
        while True:
            msg = await ws.receive(timeout=SILENCE_LIMIT)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return
            self.last_message = time.monotonic()
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "snapshot":
                await self._restore(data)
            elif kind == "changes":
                await self._apply([Change.from_json(c) for c in data["changes"]])
            elif kind == "heartbeat":
                self.leader_position = int(data["position"])
            elif kind == "acks":
                acks = True
            if acks and self.changelog.position != self._acked:
                # Applied and logged in committed transactions: stored for good.
                self._acked = self.changelog.position
                await ws.send_str(json.dumps({"type": "ack", "position": self._acked}))

    async def _restore(self, data: dict[str, Any]) -> None:
        datasets = data.get("datasets") or {}
        for name, ds in self.datasets.items():
            docs = datasets.get(name)
            if docs is None:
                log.warning("primary sent no %s data; keeping ours", name)
                continue
            await ds.restore(docs)
            if name in self.changelog.mirrored:
                await self.changelog.set_mirror(name, docs)
        for name in set(datasets) - set(self.datasets):
            log.warning("primary replicates %s, which this node does not keep", name)
        await self.changelog.reset(int(data["position"]), int(data["epoch"]))
        self.leader_position = int(data["position"])
        self.applied_at = time.monotonic()
        log.info("replication: restored a snapshot at position %d", data["position"])

    async def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            ds = self.datasets.get(change.dataset)
            if ds is None:
                log.warning("replication: no local %s data set; skipping", change.dataset)
                continue
            await ds.apply(change.key, change.doc)
        await self.changelog.append(changes)
        self.leader_position = max(self.leader_position, changes[-1].seq)
        self.applied_at = time.monotonic()
