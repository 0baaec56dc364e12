"""Scrape-time readings of a running server: levels and totals kept by its components.

Nothing here is updated on a hot path: per-byte and per-connection counts are
the components' own plain integers, read when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rportd.ha.state import ACTIVE, DRAINING, FENCED, PRIMARY, SECONDARY, STANDBY

if TYPE_CHECKING:
    from rportd.app import RportServer

HA_ROLES = (PRIMARY, SECONDARY)
HA_STATES = (ACTIVE, STANDBY, DRAINING, FENCED)


class ServerCollector(Collector):
    """Reads clients, tunnels, logins, HA and sync-back facts of ``server`` per scrape."""

    def __init__(self, server: RportServer) -> None:
        self.server = server
        self.syncback_backlog = 0  # refreshed by :meth:`refresh` (a database read)
        self._caught_up_at = time.monotonic()

    async def refresh(self) -> None:
        """Read what needs I/O, before a scrape."""
        syncback = self.server.syncback
        if syncback is not None:
            self.syncback_backlog = await syncback.outbox.count()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._clients()
        yield from self._tunnels()
        yield from self._logins()
        yield from self._ha()

    def _clients(self) -> Iterator[GaugeMetricFamily]:
        server = self.server
        registry = server.clients.registry
        yield GaugeMetricFamily(
            "rportd_clients_connected", "Clients connected now.", registry.connected_count
        )
        yield GaugeMetricFamily(
            "rportd_clients_disconnected",
            "Clients known but not connected now.",
            registry.disconnected_count,
        )
        listener = getattr(server, "listener", None)
        yield GaugeMetricFamily(
            "rportd_ssh_handshakes_in_progress",
            "Client connections between WebSocket upgrade and SSH authentication.",
            listener.handshakes_in_progress if listener is not None else 0,
        )

    def _tunnels(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        tunnels = self.server.tunnels
        yield GaugeMetricFamily("rportd_tunnels_open", "Tunnels running now.", len(tunnels.running))
        sent, received = tunnels.traffic()
        traffic = CounterMetricFamily(
            "rportd_tunnel_bytes",
            "Bytes through tunnels, by direction (to_client: from the tunnel's users).",
            labels=["direction"],
        )
        traffic.add_metric(["to_client"], sent)
        traffic.add_metric(["from_client"], received)
        yield traffic

    def _logins(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        server = self.server
        bans = {"clients": server.clients.ip_ban, "api": server.api_ip_ban}
        failures = CounterMetricFamily(
            "rportd_login_failures",
            "Failed logins, by listener (clients: SSH credentials; api: API users).",
            labels=["listener"],
        )
        imposed = CounterMetricFamily(
            "rportd_bans", "IP bans imposed after too many failed logins.", labels=["listener"]
        )
        banned = GaugeMetricFamily(
            "rportd_banned_ips", "IP addresses banned now.", labels=["listener"]
        )
        for name, ban in bans.items():
            failures.add_metric([name], ban.failures_total)
            imposed.add_metric([name], ban.bans_total)
            banned.add_metric([name], ban.banned_now)
        yield failures
        yield imposed
        yield banned

    def _ha(self) -> Iterator[GaugeMetricFamily]:
        ha = self.server.ha
        serving = ha is None or ha.serve_refusal() is None
        yield GaugeMetricFamily(
            "rportd_ha_serving", "1 if this node accepts clients now.", 1 if serving else 0
        )
        yield GaugeMetricFamily(
            "rportd_ha_enabled", "1 if this node is part of an HA cluster.", 0 if ha is None else 1
        )
        if ha is None:
            return
        status = ha.status()
        role = GaugeMetricFamily("rportd_ha_role", "This node's HA role (1 = it).", labels=["role"])
        for name in HA_ROLES:
            role.add_metric([name], 1 if ha.role == name else 0)
        yield role
        state = GaugeMetricFamily(
            "rportd_ha_state", "This node's HA state (1 = it).", labels=["state"]
        )
        for name in HA_STATES:
            state.add_metric([name], 1 if ha.state == name else 0)
        yield state
        yield GaugeMetricFamily("rportd_ha_epoch", "This node's HA epoch.", ha.epoch)
        replication = status.get("replication") or {}
        yield GaugeMetricFamily(
            "rportd_ha_replication_position",
            "Sequence number of the last change in this node's log.",
            int(replication.get("position") or 0),
        )
        lag = int(replication.get("lag") or 0)
        yield GaugeMetricFamily(
            "rportd_ha_replication_lag_changes",
            "Changes the primary has that this secondary has not applied yet.",
            lag,
        )
        now = time.monotonic()
        if lag == 0:
            self._caught_up_at = now
        yield GaugeMetricFamily(
            "rportd_ha_replication_lag_seconds",
            "Seconds since this secondary was last caught up with its primary (0: it is).",
            0.0 if lag == 0 else now - self._caught_up_at,
        )
        age = replication.get("last_message_seconds_ago")
        if age is not None:
            yield GaugeMetricFamily(
                "rportd_ha_replication_last_message_age_seconds",
                "Seconds since this secondary last heard from its primary.",
                float(age),
            )
        yield GaugeMetricFamily(
            "rportd_ha_syncback_backlog",
            "Records recorded here still to be synced back to the primary.",
            self.syncback_backlog,
        )
