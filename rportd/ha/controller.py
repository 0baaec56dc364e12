"""The HA state machine of one node: who serves clients, who takes writes.

Writes: the primary takes them; a secondary follows its primary's change log
and refuses writes to replicated data.

Clients: one node serves them at a time, on evidence (:mod:`rportd.ha.rules`):
with a coordinator (etcd), the holder of its leadership lease; without one, the
node the heartbeats with the peer and the clients' own knocks point to. States:

* active: serves clients (admits new ones);
* standby: does not serve; holds knocking clients' requests for a while, which
  is the evidence it may take over on;
* draining: the primary took its clients back; refuses new ones and, after
  ``drain_grace``, disconnects the rest;
* fenced: refuses clients and writes and says why; needs an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from rportd.config import HAConfig
from rportd.ha import events, rules
from rportd.ha.changelog import ChangeLog
from rportd.ha.coordinator import Coordinator, CoordinatorUnavailable
from rportd.ha.evidence import Fleet, Lobby, Pingable, Pings
from rportd.ha.peers import PeerClient, PeerView, base_url, error_text
from rportd.ha.replication import Follower, ReplicationRefused
from rportd.ha.rules import Facts, Step
from rportd.ha.state import ACTIVE, DRAINING, FENCED, PRIMARY, SECONDARY, STANDBY, NodeState
from rportd.store.changes import ReplicatedDataset

log = logging.getLogger(__name__)

STATE_FILE = "ha-state.json"
HEARTBEAT_INTERVAL = 0.5
DECIDE_INTERVAL = 0.25
PROBE_TIMEOUT = 1.0
FLEET_RESEND = 5.0
FLEET_BATCH = 1000
NONCES_KEPT = 16  # answers' nonces a heartbeat request may echo (8 s of them)
NET_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


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
        client_connections: Callable[[], Iterable[tuple[str, Pingable]]] = lambda: (),
        drain_grace: float = 150.0,
        sync_back: Callable[[str], Awaitable[object]] | None = None,
        lobby_hold: float = 20.0,
    ) -> None:
        self.config = config
        self.path = data_dir / STATE_FILE
        self.changelog = changelog
        self.datasets = datasets
        self.connected_clients = connected_clients
        self.disconnect_clients = disconnect_clients
        self.client_connections = client_connections
        self.drain_grace = drain_grace
        self.sync_back = sync_back
        self.node = NodeState("", 0, config.role, config.primary)
        self.state = STANDBY
        self.reason = ""
        self.peers = PeerClient(config.cluster_secret, lambda: (self.node.node_id, self.node.epoch))
        self.views: dict[str, PeerView] = {}
        self.follower = Follower(changelog, datasets)
        self.streams: set[web.WebSocketResponse] = set()
        self.fleet = Fleet()
        self.lobby = Lobby(hold=lobby_hold)
        self.pings = Pings(client_connections)
        self.link_ok_at = 0.0  # monotonic: last heartbeat with a peer (see _link_contact)
        self.handed_over_at = -rules.HANDOVER_HOLDOFF
        self.serving_since = 0.0
        self._fleet_sent: dict[str, tuple[int, float]] = {}
        self._nonces: dict[str, float] = {}  # nonce -> monotonic time we answered with it
        self._tasks: set[asyncio.Task[object]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._acting = False
        self.changed = asyncio.Event()
        self.coordinator: Coordinator | None = None
        self._etcd_reachable = True

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

    @property
    def serving(self) -> bool:
        return self.state == ACTIVE

    def link_up(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.link_ok_at < rules.LINK_LEASE

    def peer_view(self) -> PeerView | None:
        """The peer as its freshest heartbeat showed it (probes do not say who serves)."""
        heard = [v for v in self.views.values() if v.heartbeat_at > 0]
        return max(heard, key=lambda v: v.heartbeat_at) if heard else None

    def facts(self, now: float | None = None) -> Facts:
        now = time.monotonic() if now is None else now
        up = self.link_up(now)
        peer = self.peer_view() if up else None
        return Facts(
            primary=self.role == PRIMARY,
            serving=self.serving,
            link_up=up,
            link_down_for=0.0 if up else now - self.link_ok_at,
            peer_serving=bool(peer and peer.serving),
            peer_link_up=bool(peer and peer.link_up),
            peer_waiting=peer.waiting if peer else 0,
            fleet=len(self.fleet),
            fresh=self.pings.fresh(self.fleet, now),
            waiting=self.lobby.waiting(self.fleet, now),
            knocked=self.lobby.knocked(now),
            takeover_after=self.config.takeover_after,
            holdoff=now - self.handed_over_at < rules.HANDOVER_HOLDOFF,
            settling=now - self.serving_since < rules.LINK_LEASE,
        )

    def admitting(self) -> bool:
        """Whether a client connecting now would be served."""
        if self.coordinator is not None:
            return self.serving and self.coordinator.holding()
        return rules.serve_allowed(self.facts())

    def admission_refusal(self) -> str | None:
        """Why a client's WebSocket upgrade is refused now (``None``: let it knock).

        Refusing the upgrade makes the client try its next server at once; a
        node that may take over lets clients in to knock instead (their
        ``new_connection`` waits in the lobby: :meth:`admit_client`).
        """
        if self.state == FENCED:
            return f"fenced: {self.reason}"
        f = self.facts()
        if f.primary and not f.serving and f.link_up and f.peer_serving:
            if f.holdoff:
                # The clients could not reach us a moment ago: send them on to the peer.
                return f"standby: clients were handed over to {self._peer_url()}"
            if not self._etcd_reachable:
                return f"standby: {self._peer_url()} serves; this node cannot reach etcd"
        return None

    def serve_refusal(self) -> str | None:
        """Why this node does not serve clients now (``None``: it does): for /readyz."""
        if self.admitting():
            return None
        if self.state == FENCED:
            return f"fenced: {self.reason}"
        if self.state == DRAINING:
            return f"draining: the primary {self.node.primary or self._peer_url()} is back"
        return self._standby_text()

    def _standby_text(self) -> str:
        if self.role == SECONDARY:
            return (
                f"standby: the primary {self.node.primary} serves clients; "
                "this node only after a failover"
            )
        return f"standby: not serving ({self.reason or 'waiting for evidence'})"

    async def admit_client(self, client_id: str) -> str | None:
        """Whether a registering client is served (``None``) or why not.

        A client that knocks while this node does not serve is held for up to
        ``lobby_hold`` seconds: if this node takes over meanwhile, it is served.
        """
        if self.admitting():
            self.lobby.forget(client_id)
            return None
        if self.state == FENCED:
            return self.admission_refusal()
        self.lobby.knock(client_id, time.monotonic())
        self.changed.set()
        if await self.lobby.wait(client_id, self.admitting):
            self.lobby.forget(client_id)
            return None
        return self._standby_text()

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
        """What peers learn from ``GET /ha/node`` and heartbeats."""
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
        now = time.monotonic()
        f = self.facts(now)
        return {
            **self.node_info(),
            "admitting": self.admitting(),
            "reason": self.reason,
            "primary": self.node.primary if secondary else "",
            **self._mode_status(),
            "evidence": {
                "link_up": f.link_up,
                "link_down_seconds": round(f.link_down_for, 3),
                "fleet": f.fleet,
                "fresh": f.fresh,
                "waiting": f.waiting,
                "knocked": f.knocked,
                "peer_waiting": f.peer_waiting,
            },
            "replication": {
                "position": self.changelog.position,
                "primary_position": self.follower.leader_position if secondary else None,
                "lag": self.follower.lag if secondary else 0,
                "last_message_seconds_ago": round(now - last, 3) if secondary and last else None,
            },
            "peers": [
                self.views[p].to_json() if p in self.views else {"url": p}
                for p in self._peer_urls()
            ],
        }

    def _mode_status(self) -> dict[str, Any]:
        coordinator = self.coordinator
        if coordinator is None:
            return {
                "mode": "peer",
                "partition_safe": "as far as the clients' evidence goes (two nodes, no "
                "coordinator; see the README's fault table)",
            }
        return {
            "mode": "coordinator",
            "partition_safe": "yes (leadership is an etcd lease)",
            "coordinator": {
                "endpoints": coordinator.endpoints,
                "holding": coordinator.holding(),
                "epoch": coordinator.epoch,
                "error": coordinator.last_error,
            },
        }

    def _peer_urls(self) -> list[str]:
        urls = [base_url(p) for p in self.config.peers]
        if self.node.primary and base_url(self.node.primary) not in urls:
            urls.append(base_url(self.node.primary))
        return urls

    def _url_of(self, view: PeerView) -> str:
        """Where to call the peer of ``view`` (a view from its own heartbeats has no URL)."""
        if not view.url.startswith("node:"):
            return view.url
        for url, other in self.views.items():
            if other.node_id == view.node_id and not url.startswith("node:"):
                return url
        urls = self._peer_urls()
        return urls[0] if urls else view.url

    def _peer_url(self) -> str:
        view = self.peer_view()
        if view is not None:
            return self._url_of(view)
        urls = self._peer_urls()
        return urls[0] if urls else ""

    # --- heartbeats ------------------------------------------------------------------

    def heartbeat_payload(self) -> dict[str, Any]:
        """What this node tells a peer in a heartbeat (both ways)."""
        now = time.monotonic()
        return {
            **self.node_info(),
            "serving": self.serving,
            "link_up": self.link_up(now),
            "waiting": self.lobby.waiting(self.fleet, now),
            "fleet_generation": self.fleet.generation,
        }

    def fleet_for(self, peer_id: str, known_generation: int) -> list[str] | None:
        """The fleet ids to send ``peer_id``, when it lacks them (at most every 5 s)."""
        if not self.serving or known_generation == self.fleet.generation:
            return None
        now = time.monotonic()
        generation, sent_at = self._fleet_sent.get(peer_id, (-1, 0.0))
        if generation == self.fleet.generation and now - sent_at < FLEET_RESEND:
            return None  # sent already; the answer may still be on its way
        if len(self.fleet) > FLEET_BATCH and now - sent_at < FLEET_RESEND:
            return None  # a large fleet goes out at most every FLEET_RESEND seconds
        self._fleet_sent[peer_id] = (self.fleet.generation, now)
        return sorted(self.fleet.ids)

    def heartbeat_received(self, body: dict[str, Any], node_id: str) -> dict[str, Any]:
        """A peer's heartbeat: note it (the link is up) and answer with ours.

        A request counts only if it echoes a nonce from one of our recent answers:
        then it was written after that answer, and counts from when we issued the
        nonce (the earliest it can be). A request held back by the network and
        delivered late (a healed partition) says nothing about now and is ignored.
        """
        issued = self._nonces.get(str(body.get("echo", "")))
        url = next((u for u, v in self.views.items() if v.node_id == node_id), f"node:{node_id}")
        view = self.views.get(url) or PeerView(url=url)
        if issued is not None and issued > view.heartbeat_at:
            self._link_contact(issued)
            _read_view(view, body, issued)
            self.views[url] = view
            self.changed.set()
        answer = self.heartbeat_payload()
        answer["nonce"] = self._issue_nonce()
        fleet = self.fleet_for(view.node_id, int(body.get("your_fleet_generation", -1)))
        if fleet is not None:
            answer["fleet"] = fleet
        return answer

    def _issue_nonce(self) -> str:
        nonce = secrets.token_hex(8)
        self._nonces[nonce] = time.monotonic()
        while len(self._nonces) > NONCES_KEPT:
            del self._nonces[next(iter(self._nonces))]
        return nonce

    def _link_contact(self, at: float) -> None:
        self.link_ok_at = max(self.link_ok_at, at)

    def _take_fleet(self, body: dict[str, Any], view: PeerView) -> None:
        fleet = body.get("fleet")
        if isinstance(fleet, list) and view.serving and not self.serving:
            self.fleet.update(str(c) for c in fleet)
            view.fleet_generation = int(body.get("fleet_generation", 0))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.gather(*(self._heartbeat(u) for u in self._peer_urls()))
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _heartbeat(self, url: str) -> None:
        view = self.views.get(url) or PeerView(url=url)
        body = self.heartbeat_payload()
        body["your_fleet_generation"] = view.fleet_generation if view.reachable else -1
        body["echo"] = view.nonce
        sent = time.monotonic()
        serving_when_sent = self.serving
        try:
            status, answer = await self.peers.call(
                "POST", url, "/heartbeat", json=body, timeout=PROBE_TIMEOUT
            )
        except NET_ERRORS as exc:
            view.reachable = False
            view.answered = False
            view.error = str(exc) or type(exc).__name__
            self.views[url] = view
            return
        received = time.monotonic()
        data = answer.get("data") if isinstance(answer, dict) else None
        view.answered = True
        if status != 200 or not isinstance(data, dict):
            view.reachable = False
            view.error = f"HTTP {status}: {error_text(answer)}"
            self.views[url] = view
            return
        # The answer was written between sent and received. The serving node counts
        # the link from when it asked (earliest), the other node from when the
        # answer came (latest): the serving node's lease then always ends before
        # the other node may take over.
        _read_view(view, data, sent)
        view.nonce = str(data.get("nonce", ""))
        self.views[url] = view
        self._link_contact(sent if serving_when_sent else received)
        self._take_fleet(data, view)
        self.changed.set()

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Decide this node's role and state before clients are let in."""
        self.node = await NodeState.load(self.path, self.config.role, base_url(self.config.primary))
        self.node.epoch = max(self.node.epoch, self.changelog.last_epoch)
        await self.node.save(self.path)
        if self.config.coordinator:
            self.coordinator = Coordinator(
                list(self.config.coordinator), self.node.node_id, ttl=self.config.coordinator_ttl
            )
            self.coordinator.on_change(self._lease_flipped)
            await self.coordinator.start()
        if self.role == PRIMARY:
            await self._start_primary()
        else:
            self._enter_secondary()
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="ha-heartbeats"))
        self._loops.append(asyncio.create_task(self._decide_loop(), name="ha-decide"))

    async def stop(self) -> None:
        """Stop; a serving node hands its clients to a peer it can see first."""
        peer = self.peer_view()
        if self.serving and self.coordinator is None and peer is not None and self.link_up():
            url = self._url_of(peer)
            self._set(STANDBY, "shutting down")
            self.disconnect_clients()
            try:
                await self.peers.call("POST", url, "/take-over", timeout=PROBE_TIMEOUT)
            except NET_ERRORS as exc:
                log.info("HA: could not hand clients over to %s at shutdown: %s", url, exc)
        tasks = [t for t in (*self._loops, self._drain_task, *self._tasks) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pings.stop()
        if self.coordinator is not None:
            await self.coordinator.stop()
        self.lobby.open()
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
        if state == ACTIVE and self.state != ACTIVE:
            self.serving_since = time.monotonic()
        self.state = state
        self.reason = reason
        if state == ACTIVE:
            self.lobby.open()
        self.changed.set()

    async def _probe_all(self) -> list[PeerView]:
        urls = self._peer_urls()
        views = await asyncio.gather(*(self.peers.probe(u, PROBE_TIMEOUT) for u in urls))
        for view in views:
            old = self.views.get(view.url)
            if old is not None:
                _keep_heartbeat_facts(view, old)
            self.views[view.url] = view
        return list(views)

    # --- deciding who serves -----------------------------------------------------------

    async def _decide_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a
            # cancellation that arrives as the event is set, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DECIDE_INTERVAL):
                    await self.changed.wait()
            self.changed.clear()
            if self.state in (FENCED, DRAINING) or self._acting:
                continue
            now = time.monotonic()
            self._track_fleet(now)
            f = self.facts(now)
            self._steer_pings(f)
            if self.coordinator is not None:
                step, why = await self._decide_with_coordinator(self.coordinator, f)
            else:
                step, why = rules.decide(f)
            if step is not Step.STAY:
                log.debug("HA: %s on %s", step.value, f)
                self._acting = True
                try:
                    await self._carry_out(step, why)
                finally:
                    self._acting = False

    def _lease_flipped(self) -> None:
        """The coordinator's lease came or went: a lost one stops clients at once."""
        if self.coordinator is not None and not self.coordinator.holding() and self.serving:
            self._set(STANDBY, f"lost the coordinator lease: {self.coordinator.last_error}")
            self.disconnect_clients()
        self.changed.set()

    async def _decide_with_coordinator(
        self, coordinator: Coordinator, f: Facts
    ) -> tuple[Step, str]:
        """With etcd: serve exactly while holding the lease; the evidence only steers it."""
        if coordinator.holding():
            if not f.serving:
                self.node.epoch = max(self.node.epoch, coordinator.epoch)
                await self.node.save(self.path)
                return Step.SERVE, f"holds the coordinator lease (epoch {coordinator.epoch})"
            step, why = rules.decide(f)
            if step is Step.HAND_OVER:
                await coordinator.resign()
                return step, why
            return Step.STAY, ""
        if f.serving:
            return Step.STOP, f"lost the coordinator lease: {coordinator.last_error}"
        try:  # can this node take the lease at all?
            await coordinator.leader()
            self._etcd_reachable = True
        except CoordinatorUnavailable:
            self._etcd_reachable = False
        if f.link_up and f.peer_serving:
            step, why = rules.decide(f)
            if step is not Step.TAKE_BACK:
                return Step.STAY, ""
            return (step, why) if self._etcd_reachable else (Step.STAY, "")
        # The lease may be free: the primary always tries; a secondary once the primary
        # is gone from the link or does not serve.
        if (f.primary and not f.holdoff) or not f.link_up or not f.peer_serving:
            await coordinator.try_acquire(self.node.node_id)
            self.changed.set()
        return Step.STAY, ""

    def _track_fleet(self, now: float) -> None:
        """While the link is up, the serving node's clients are the fleet."""
        if self.serving and self.link_up(now):
            self.fleet.update(client_id for client_id, _ in self.client_connections())

    def _steer_pings(self, f: Facts) -> None:
        need = f.serving and (not f.link_up or f.peer_waiting > 0)
        if need and not self.pings.running:
            self.pings.start()
        elif not need and self.pings.running:
            self._spawn(self.pings.stop(), "ha-pings-stop")

    async def _carry_out(self, step: Step, why: str) -> None:
        if step is Step.SERVE:
            self._set(ACTIVE, why)
        elif step is Step.STOP:
            self._set(STANDBY, why)
            self.disconnect_clients()
        elif step is Step.HAND_OVER:
            await self._hand_over(why)
        elif step is Step.TAKE_BACK:
            await self._take_back(why)
        elif step is Step.YIELD:
            self._start_draining()

    async def _hand_over(self, why: str) -> None:
        """Stop serving here first, then tell the peer to serve."""
        peer = self.peer_view()
        if peer is None:
            return
        url = self._url_of(peer)
        self._set(STANDBY, f"handed clients over to {url}: {why}")
        self.disconnect_clients()
        try:
            status, _ = await self.peers.call("POST", url, "/take-over", timeout=PROBE_TIMEOUT)
        except NET_ERRORS as exc:
            status = 0
            log.warning("HA: could not hand clients over to %s: %s", url, exc)
        if status // 100 == 2:
            peer.serving = True
            self.handed_over_at = time.monotonic()
        else:
            self._set(ACTIVE, f"{url} did not take the clients over")

    async def take_over(self) -> None:
        """The serving peer stopped and hands its clients to us."""
        if self._drain_task is not None and self.state == DRAINING:
            self._drain_task.cancel()
            self._set(STANDBY, "the peer hands its clients over")
        if self.coordinator is not None:
            self.changed.set()  # the lease is free now: the decide loop takes it
        elif self.state == STANDBY:
            self._set(ACTIVE, "the peer handed its clients over")

    async def _take_back(self, why: str) -> None:
        """Ask the serving peer to step down; serve once it has."""
        peer = self.peer_view()
        if peer is None:
            return
        url = self._url_of(peer)
        try:
            status, _ = await self.peers.call("POST", url, "/step-down", timeout=PROBE_TIMEOUT)
        except NET_ERRORS as exc:
            log.warning("HA: could not ask %s to step down: %s", url, exc)
            return
        if status // 100 == 2:
            peer.serving = False
            if self.coordinator is None:
                self._set(ACTIVE, why)
            else:
                self.changed.set()  # the peer resigned: take the lease

    # --- primary ----------------------------------------------------------------------

    async def _start_primary(self) -> None:
        self.changelog.writable = True
        views = await self._probe_all()
        if await self._check_rivals(views, starting=True):
            return
        self._loops.append(asyncio.create_task(self._primary_loop(), name="ha-primary"))

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
        while self.role == PRIMARY and self.state != FENCED:
            await asyncio.sleep(1.0)
            if await self._check_rivals(list(self.views.values()), starting=False):
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
        for task in self._loops:
            if task.get_name() in ("ha-primary", "ha-secondary"):
                task.cancel()
        if self._drain_task is not None:
            self._drain_task.cancel()
        self.node.epoch = max(known) + 1
        self.node.role = PRIMARY
        self.node.primary = ""
        await self.node.save(self.path)
        self.changelog.writable = True
        log.warning("HA: promoted to primary with epoch %d", self.epoch)
        self._set(ACTIVE, "promoted")
        self._loops.append(asyncio.create_task(self._primary_loop(), name="ha-primary"))
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
        self._loops.append(asyncio.create_task(self._secondary_loop(), name="ha-secondary"))

    async def step_down(self) -> None:
        """The primary takes its clients back (it told us): stop taking new ones."""
        if self.state == ACTIVE:
            self._start_draining()
        if self.coordinator is not None:
            await self.coordinator.resign()

    async def _secondary_loop(self) -> None:
        while self.role == SECONDARY:
            primary = await self._find_primary()
            if primary is not None and primary.reachable:
                try:
                    await self._follow(primary)
                except ReplicationRefused as exc:
                    self._refused(str(exc))
                    await asyncio.sleep(2.0)
                    continue
                except (*NET_ERRORS, ValueError) as exc:
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
                # Alive but refusing us (wrong secret, ...): say why.
                self._refused(f"the primary {primary.url} refuses this node: {primary.error}")
                await asyncio.sleep(2.0)
                continue
            await asyncio.sleep(HEARTBEAT_INTERVAL)

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
            old = self.views.get(view.url)
            if old is not None:
                _keep_heartbeat_facts(view, old)
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
            if self.state == STANDBY and self.reason.startswith(("applying", "the primary")):
                self._set(STANDBY)  # clears an earlier refusal reason
            self._spawn(self._sync_back(), "ha-sync-back")
            await self.follower.run(ws)

    def _start_draining(self) -> None:
        self._set(DRAINING, f"primary {self.node.primary or self._peer_url()} is back")
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
        if self.sync_back is None or not self.node.primary or self.role != SECONDARY:
            return
        try:
            await self.sync_back(self.node.primary)
        except NET_ERRORS as exc:
            log.info("HA: sync back to %s failed, will retry: %s", self.node.primary, exc)


def _read_view(view: PeerView, body: dict[str, Any], at: float) -> None:
    """Fill a peer's view from its heartbeat (request or answer)."""
    view.reachable = True
    view.answered = True
    view.error = ""
    view.checked_at = at
    view.read_node(body)
    view.serving = bool(body.get("serving", False))
    view.waiting = int(body.get("waiting", 0))
    view.link_up = bool(body.get("link_up", False))
    view.heartbeat_at = at


def _keep_heartbeat_facts(view: PeerView, old: PeerView) -> None:
    view.serving = old.serving
    view.waiting = old.waiting
    view.fleet_generation = old.fleet_generation
    view.heartbeat_at = old.heartbeat_at
    view.link_up = old.link_up
    view.nonce = old.nonce
