"""The HA state machine of one node: who serves clients, who takes writes.

* primary/active: serves clients and takes writes; watches its peers and
  demotes itself to secondary when a primary with a higher epoch appears, or
  fences itself when an active primary has the same epoch.
* secondary/standby: follows its primary's replication and refuses clients.
* secondary/active: the primary has been unreachable for ``takeover_after``;
  serves clients, still refuses writes to replicated data.
* secondary/draining: the primary is back; refuses new clients, syncs back,
  and after ``drain_grace`` disconnects the clients still here.
* fenced: refuses clients and writes and says why; needs an operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from rportd.config import HAConfig
from rportd.ha import events
from rportd.ha.changelog import ChangeLog
from rportd.ha.peers import PeerClient, PeerView, base_url
from rportd.ha.replication import Follower, ReplicationRefused
from rportd.ha.state import ACTIVE, DRAINING, FENCED, PRIMARY, SECONDARY, STANDBY, NodeState
from rportd.store.changes import ReplicatedDataset

log = logging.getLogger(__name__)

STATE_FILE = "ha-state.json"
PRIMARY_PROBE_INTERVAL = 1.0
LOST_PRIMARY_PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0


class HAController:
    """Runs one node's part of the cluster."""

    def __init__(
        self,
        config: HAConfig,
        data_dir: Path,
        changelog: ChangeLog,
        datasets: Mapping[str, ReplicatedDataset],
        *,
        connected_clients: Callable[[], int],
        disconnect_clients: Callable[[], None],
        drain_grace: float = 150.0,
        sync_back: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.config = config
        self.path = data_dir / STATE_FILE
        self.changelog = changelog
        self.datasets = datasets
        self.connected_clients = connected_clients
        self.disconnect_clients = disconnect_clients
        self.drain_grace = drain_grace
        self.sync_back = sync_back
        self.node = NodeState("", 0, config.role, config.primary)
        self.state = STANDBY
        self.reason = ""
        self.peers = PeerClient(config.cluster_secret, lambda: (self.node.node_id, self.node.epoch))
        self.views: dict[str, PeerView] = {}
        self.follower = Follower(changelog, datasets)
        self.streams: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[object]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    # --- facts ---------------------------------------------------------------------

    @property
    def role(self) -> str:
        return self.node.role

    @property
    def epoch(self) -> int:
        return self.node.epoch

    @property
    def primary_url(self) -> str:
        return self.node.primary if self.role == SECONDARY else ""

    def admission_refusal(self) -> str | None:
        """Why client connections are refused now (``None``: accepted)."""
        if self.state == ACTIVE:
            return None
        if self.state == FENCED:
            return f"fenced: {self.reason}"
        if self.state == DRAINING:
            return f"draining: the primary {self.node.primary} is back and serves clients"
        return (
            f"standby: the primary {self.node.primary} serves clients; "
            "this node only after a failover"
        )

    def write_refusal(self) -> str | None:
        """Why writes to replicated data are refused now (``None``: allowed)."""
        if self.role == SECONDARY:
            return (
                "this node is a secondary and only takes data replicated from its primary; "
                f"write to the primary at {self.node.primary}"
            )
        if self.state == FENCED:
            return f"this node is fenced: {self.reason}"
        return None

    def node_info(self) -> dict[str, Any]:
        """What peers learn from ``GET /ha/node``."""
        return {
            "node_id": self.node.node_id,
            "role": self.role,
            "state": self.state,
            "epoch": self.epoch,
            "position": self.changelog.position,
            "clients": self.connected_clients(),
        }

    def status(self) -> dict[str, Any]:
        """``GET /ha/status``: for people and scripts."""
        secondary = self.role == SECONDARY
        last = self.follower.last_message
        return {
            **self.node_info(),
            "reason": self.reason,
            "primary": self.node.primary if secondary else "",
            "replication": {
                "position": self.changelog.position,
                "primary_position": self.follower.leader_position if secondary else None,
                "lag": self.follower.lag if secondary else 0,
                "last_message_seconds_ago": round(time.monotonic() - last, 3)
                if secondary and last
                else None,
            },
            "peers": [
                self.views[p].to_json() if p in self.views else {"url": p}
                for p in self._peer_urls()
            ],
        }

    def _peer_urls(self) -> list[str]:
        urls = [base_url(p) for p in self.config.peers]
        if self.node.primary and base_url(self.node.primary) not in urls:
            urls.append(base_url(self.node.primary))
        return urls

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Decide this node's role and state before clients are let in."""
        self.node = await NodeState.load(self.path, self.config.role, base_url(self.config.primary))
        self.node.epoch = max(self.node.epoch, self.changelog.last_epoch)
        await self.node.save(self.path)
        if self.role == PRIMARY:
            await self._start_primary()
        else:
            self._enter_secondary()

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, self._drain_task, *self._tasks) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.close_streams()
        await self.peers.close()

    def _spawn(self, coro: Awaitable[object], name: str) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _set(self, state: str, reason: str = "") -> None:
        if (state, reason) != (self.state, self.reason):
            events.record(self, state, reason)
            log.log(
                logging.ERROR if state == FENCED else logging.INFO,
                "HA: %s is now %s%s",
                self.role,
                state,
                f" ({reason})" if reason else "",
            )
        self.state = state
        self.reason = reason
        self.changed.set()

    async def _probe_all(self) -> list[PeerView]:
        urls = self._peer_urls()
        views = await asyncio.gather(*(self.peers.probe(u, PROBE_TIMEOUT) for u in urls))
        for view in views:
            self.views[view.url] = view
        return list(views)

    # --- primary ----------------------------------------------------------------------

    async def _start_primary(self) -> None:
        self.changelog.writable = True
        views = await self._probe_all()
        if await self._check_rivals(views, starting=True):
            return
        for view in views:
            if view.reachable and view.role == SECONDARY and view.state == ACTIVE:
                # A secondary serving clients while we were away: make it step down
                # before we let clients in, so two nodes never both accept them.
                try:
                    await self.peers.call("POST", view.url, "/step-down", timeout=PROBE_TIMEOUT)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    log.warning("HA: could not ask %s to step down: %s", view.url, exc)
        self._set(ACTIVE)
        self._loop_task = asyncio.create_task(self._primary_loop(), name="ha-primary")

    async def _check_rivals(self, views: list[PeerView], *, starting: bool) -> bool:
        """Demote or fence this primary if another primary outranks it; True if so."""
        for view in views:
            if not view.reachable or view.role != PRIMARY:
                continue
            if view.epoch > self.epoch:
                await self._demote(view)
                return True
            # Equal epochs: the newcomer yields; between two running ones, the larger id.
            outranked = starting or view.node_id < self.node.node_id
            if view.epoch == self.epoch and view.state == ACTIVE and outranked:
                self._fence(
                    f"another primary ({view.url}) is active with the same epoch "
                    f"{self.epoch}; promote one node (rportd ha promote) or make one a "
                    "secondary, then restart this one"
                )
                return True
        return False

    async def _primary_loop(self) -> None:
        while self.role == PRIMARY and self.state == ACTIVE:
            await asyncio.sleep(PRIMARY_PROBE_INTERVAL)
            views = await self._probe_all()
            if await self._check_rivals(views, starting=False):
                return

    def _fence(self, reason: str) -> None:
        self.changelog.writable = False
        self._set(FENCED, reason)
        self.disconnect_clients()
        self._close_streams()

    async def _demote(self, leader: PeerView) -> None:
        log.warning(
            "HA: %s is primary with epoch %d (ours %d): becoming its secondary",
            leader.url,
            leader.epoch,
            self.epoch,
        )
        self.node.role = SECONDARY
        self.node.primary = leader.url
        await self.node.save(self.path)
        self.disconnect_clients()
        self._close_streams()
        self._enter_secondary()

    def _close_streams(self) -> None:
        for ws in list(self.streams):
            self._spawn(ws.close(), "ha-close-stream")

    async def close_streams(self) -> None:
        """End every replication stream this node serves."""
        await asyncio.gather(*(ws.close() for ws in list(self.streams)), return_exceptions=True)

    async def promote(self) -> dict[str, Any]:
        """Make this node the primary with a higher epoch than any it knows."""
        views = await self._probe_all()
        known = [self.epoch, self.changelog.last_epoch] + [v.epoch for v in views if v.reachable]
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._drain_task is not None:
            self._drain_task.cancel()
        self.node.epoch = max(known) + 1
        self.node.role = PRIMARY
        self.node.primary = ""
        await self.node.save(self.path)
        self.changelog.writable = True
        log.warning("HA: promoted to primary with epoch %d", self.epoch)
        self._set(ACTIVE)
        self._loop_task = asyncio.create_task(self._primary_loop(), name="ha-primary")
        return self.status()

    def authorize_follower(self, follower_epoch: int) -> str | None:
        """Why a follower may not replicate from us (``None``: it may)."""
        if self.role != PRIMARY:
            return f"this node is not the primary (it follows {self.node.primary})"
        if self.state == FENCED:
            return f"this node is fenced: {self.reason}"
        if follower_epoch > self.epoch:
            return (
                f"the follower knows epoch {follower_epoch}, higher than this primary's "
                f"{self.epoch}: this primary is out of date"
            )
        return None

    # --- secondary --------------------------------------------------------------------

    def _enter_secondary(self) -> None:
        self.changelog.writable = False
        self._set(STANDBY)
        self._loop_task = asyncio.create_task(self._secondary_loop(), name="ha-secondary")

    async def step_down(self) -> None:
        """The primary is back (it told us): stop taking new clients."""
        if self.role == SECONDARY and self.state == ACTIVE:
            self._start_draining()

    async def _secondary_loop(self) -> None:
        while True:
            primary = await self._find_primary()
            if primary is not None and primary.reachable:
                if self.state == ACTIVE:
                    self._start_draining()
                try:
                    await self._follow(primary)
                except ReplicationRefused as exc:
                    self._refused(str(exc))
                    await asyncio.sleep(2.0)
                    continue
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    log.info(
                        "HA: replication from %s ended: %s", primary.url, exc or type(exc).__name__
                    )
                except Exception as exc:
                    # A change that cannot be applied must not end replication for good.
                    log.exception("HA: applying replication from %s failed", primary.url)
                    self._refused(f"applying a change from {primary.url} failed: {exc!r}")
                    await asyncio.sleep(2.0)
                    continue
            elif primary is not None:
                # Alive but refusing us (wrong secret, ...): no takeover, say why.
                self._refused(f"the primary {primary.url} refuses this node: {primary.error}")
                await asyncio.sleep(2.0)
                continue
            await self._watch_lost_primary()

    def _refused(self, reason: str) -> None:
        if reason != self.reason:
            log.error("HA: replication refused: %s", reason)
        self.reason = reason

    async def _find_primary(self) -> PeerView | None:
        """The primary to follow: ours if it still leads, else the highest-epoch one.

        A node that answered but refused us comes back too (alive, not reachable).
        """
        view = (
            await self.peers.probe(self.node.primary, PROBE_TIMEOUT) if self.node.primary else None
        )
        if view is not None:
            self.views[view.url] = view
            if view.reachable and view.role == PRIMARY:
                return view
        leaders = [v for v in await self._probe_all() if v.reachable and v.role == PRIMARY]
        if not leaders:
            return view if view is not None and view.answered else None
        best = max(leaders, key=lambda v: v.epoch)
        if best.url != self.node.primary:
            log.info("HA: following %s (epoch %d)", best.url, best.epoch)
            self.node.primary = best.url
            await self.node.save(self.path)
        return best

    async def _follow(self, leader: PeerView) -> None:
        if leader.epoch < self.epoch:
            raise ReplicationRefused(
                f"{leader.url} has epoch {leader.epoch}, lower than this node's {self.epoch}; "
                "refusing its data"
            )
        primary = leader.url
        position = self.changelog.position
        try:
            ws = await self.peers.ws_connect(
                primary,
                "/replication",
                {"position": str(position), "epoch": str(self.changelog.last_epoch)},
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (403, 409):
                raise ReplicationRefused(
                    f"{primary} answered {exc.status}: {exc.message}"
                ) from None
            raise
        async with ws:
            hello = await ws.receive_json(timeout=5.0)
            leader_epoch = int(hello.get("epoch", 0))
            if hello.get("role") != PRIMARY:
                raise ReplicationRefused(f"{primary} is not a primary")
            if leader_epoch < self.epoch:
                raise ReplicationRefused(
                    f"{primary} has epoch {leader_epoch}, lower than this node's {self.epoch}; "
                    "refusing its data"
                )
            if leader_epoch > self.epoch:
                self.node.epoch = leader_epoch
                await self.node.save(self.path)
            if self.state == STANDBY:
                self._set(STANDBY)  # clears an earlier refusal reason
            self._spawn(self._sync_back(), "ha-sync-back")
            await self.follower.run(ws)

    async def _watch_lost_primary(self) -> None:
        """Probe the lost primary quickly; take over after ``takeover_after``."""
        lost_at = time.monotonic()
        while True:
            if await self._find_primary() is not None:
                return  # alive again (even if it refuses us, that is no reason to take over)
            if self.state == STANDBY and time.monotonic() - lost_at >= self.config.takeover_after:
                self._set(ACTIVE, f"primary {self.node.primary} unreachable; serving its clients")
            await asyncio.sleep(LOST_PRIMARY_PROBE_INTERVAL)

    def _start_draining(self) -> None:
        self._set(DRAINING, f"primary {self.node.primary} is back")
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain(), name="ha-drain")

    async def _drain(self) -> None:
        started = time.monotonic()
        while self.connected_clients() and time.monotonic() - started < self.drain_grace:
            await self._sync_back()
            await asyncio.sleep(1.0)
        if self.connected_clients():
            log.info(
                "HA: disconnecting %d clients left after the grace period", self.connected_clients()
            )
            self.disconnect_clients()
        await self._sync_back()
        if self.state == DRAINING:
            self._set(STANDBY)

    async def _sync_back(self) -> None:
        if self.sync_back is None or not self.node.primary:
            return
        try:
            await self.sync_back(self.node.primary)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("HA: sync back to %s failed, will retry: %s", self.node.primary, exc)
