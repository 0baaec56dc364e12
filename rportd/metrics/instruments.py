"""Counters and histograms that components update as things happen.

Everything that is a level or a running total kept elsewhere (clients connected,
tunnels open, bytes through tunnels, HA facts) is read at scrape time instead,
by :mod:`rportd.metrics.collector`, so hot paths pay nothing for it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Latency buckets (seconds) for things a person waits for.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Jobs run for seconds to hours.
JOB_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
# SQLite write transactions.
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    """One server's instruments, in its own registry (several servers may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.client_connects = Counter(
            "rportd_client_connects",
            "Clients that completed registration (new_connection accepted).",
            registry=r,
        )
        self.client_refused = Counter(
            "rportd_client_connects_refused",
            "Client connections refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.ssh_handshake_seconds = Histogram(
            "rportd_ssh_handshake_seconds",
            "Time from WebSocket upgrade to SSH authentication done.",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.jobs_started = Counter(
            "rportd_jobs_started",
            "Jobs (commands and scripts) a client accepted.",
            registry=r,
        )
        self.jobs_finished = Counter(
            "rportd_jobs_finished",
            "Jobs that ended, by final status.",
            ["status"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "rportd_job_duration_seconds",
            "Run time of finished jobs (start to finish as the client reports them).",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "rportd_api_requests",
            "API requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.api_request_seconds = Histogram(
            "rportd_api_request_duration_seconds",
            "API request latency by method and route template (WebSocket routes excluded).",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        # Bound children by labels: .labels() costs more than the update itself.
        self._request_counts: dict[tuple[str, str, str], Counter] = {}
        self._request_seconds: dict[tuple[str, str], Histogram] = {}
        self.db_write_seconds = Histogram(
            "rportd_db_write_duration_seconds",
            "Duration of SQLite write transactions, by database file.",
            ["database"],
            buckets=DB_BUCKETS,
            registry=r,
        )

    def api_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """Count one API request; time it unless ``seconds`` is None (WebSocket sessions)."""
        key = (method, route, str(status))
        counter = self._request_counts.get(key)
        if counter is None:
            counter = self._request_counts[key] = self.api_requests.labels(*key)
        counter.inc()
        if seconds is not None:
            timed = self._request_seconds.get(key[:2])
            if timed is None:
                timed = self._request_seconds[key[:2]] = self.api_request_seconds.labels(*key[:2])
            timed.observe(seconds)
