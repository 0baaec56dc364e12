"""Configuration dataclasses, one per TOML section; attribute names are the TOML keys.

Durations are float seconds. Defaults are upstream's code defaults (config.md §13).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rportd.config.types import port_pool

# Field metadata key naming how a TOML value is converted (see loader).
KIND = "kind"
DURATION = "duration"  # Go duration string (or integer nanoseconds)
DAY_DURATION = "day_duration"  # "<N>d" / "<N>h"
EXT_DURATION = "ext_duration"  # Go duration plus "d" and "w" units

MASK = "***"


def _duration(default: float, kind: str = DURATION) -> Any:
    return field(default=default, metadata={KIND: kind})


def default_max_concurrent_ssh_handshakes() -> int:
    """Upstream default: half the CPUs, at least 1."""
    return max(1, (os.cpu_count() or 1) // 2)


DEFAULT_DATA_DIR = "C:\\ProgramData\\rport" if os.name == "nt" else "/var/lib/rport"


@dataclass
class ServerConfig:
    """``[server]``: client listener, client auth, storage, tunnels."""

    address: str = "0.0.0.0:8080"
    url: list[str] = field(default_factory=list)  # empty: "http://<address>"
    pairing_url: str = "https://pairing.openrport.io"
    key_seed: str = ""
    auth: str = ""
    auth_file: str = ""
    auth_table: str = ""
    auth_write: bool = True
    auth_multiuse_creds: bool = True
    equate_clientauthid_clientid: bool = False
    proxy: str = ""
    used_ports: list[str] = field(default_factory=lambda: ["20000-30000"])
    excluded_ports: list[str] = field(default_factory=lambda: ["1-1024"])
    data_dir: str = DEFAULT_DATA_DIR
    sqlite_wal: bool = True
    max_concurrent_ssh_handshakes: int = field(
        default_factory=default_max_concurrent_ssh_handshakes
    )
    purge_disconnected_clients: bool = False
    keep_disconnected_clients: float = _duration(3600.0)
    purge_disconnected_clients_interval: float = _duration(60.0)
    check_clients_connection_interval: float = _duration(300.0)
    check_clients_connection_timeout: float = _duration(30.0)
    max_request_bytes_client: int = 524288
    check_port_timeout: float = _duration(2.0)
    run_remote_cmd_timeout_sec: int = 60
    allow_root: bool = False
    client_login_wait: float = 2.0
    max_failed_login: int = 5
    ban_time: int = 3600
    jobs_max_results: int = 10000
    tunnel_host: str = ""
    tunnel_proxy_cert_file: str = ""
    tunnel_proxy_key_file: str = ""
    tunnel_enable_acme: bool = False
    tunnel_cors: list[str] = field(default_factory=list)
    novnc_root: str = ""
    guacd_address: str = ""
    tls_min: str = "1.3"
    acme_http_port: int = 0

    @property
    def tunnel_proxy_enabled(self) -> bool:
        """True when the HTTPS tunnel proxy is configured (cert+key or ACME)."""
        return bool(
            (self.tunnel_proxy_cert_file and self.tunnel_proxy_key_file) or self.tunnel_enable_acme
        )

    def client_auth_credentials(self) -> tuple[str, str] | None:
        """The single ``auth`` credential as (id, password), or None when not set."""
        if not self.auth:
            return None
        auth_id, _, password = self.auth.partition(":")
        return auth_id, password

    def allowed_ports(self) -> frozenset[int]:
        """Ports usable for tunnels (used_ports minus excluded_ports)."""
        return port_pool(self.used_ports, self.excluded_ports)


@dataclass
class LoggingConfig:
    """``[logging]``."""

    log_file: str = ""  # empty: stdout
    log_level: str = "info"
    log_format: str = "text"  # rportd's own: "text" or "json" (one object a line)


@dataclass
class ApiConfig:
    """``[api]``: the HTTP API and web UI listener."""

    address: str = ""
    base_url: str = ""
    enable_acme: bool = False
    auth: str = ""
    auth_file: str = ""
    auth_user_table: str = ""
    auth_group_table: str = ""
    auth_group_details_table: str = ""
    auth_header: str = ""
    user_header: str = "Authentication-User"
    create_missing_users: bool = False
    default_user_group: str = "Administrators"
    jwt_secret: str = ""
    max_token_lifetime: int = 0
    doc_root: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_min: str = "1.3"
    access_log_file: str = ""
    user_login_wait: float = 2.0
    max_failed_login: int = 10
    ban_time: int = 600
    password_min_length: int = 14
    password_zxcvbn_minscore: int = 0
    max_request_bytes: int = 10240
    max_filepush_size: int = 10485760
    cors: list[str] = field(default_factory=list)
    enable_ws_test_endpoints: bool = False
    two_fa_token_delivery: str = ""
    two_fa_token_ttl_seconds: int = 600
    two_fa_send_timeout: float = _duration(10.0)
    two_fa_send_to_type: str = "none"
    two_fa_send_to_regex: str = ""
    totp_enabled: bool = False
    totp_login_session_ttl: float = _duration(600.0)
    totp_account_name: str = "RPort"
    enable_audit_log: bool = True
    use_ip_obfuscation: bool = False
    audit_log_rotation: str = "monthly"

    @property
    def enabled(self) -> bool:
        """True when the API listener is configured."""
        return bool(self.address)

    @property
    def two_fa_enabled(self) -> bool:
        """True when delivered 2FA codes are configured."""
        return bool(self.two_fa_token_delivery)


@dataclass
class DatabaseConfig:
    """``[database]``: optional shared DB for API users and client credentials."""

    db_type: str = ""
    db_host: str = ""
    db_user: str = ""
    db_password: str = ""
    db_name: str = ""

    @property
    def enabled(self) -> bool:
        """True when a database is configured."""
        return bool(self.db_type)

    @property
    def on_server(self) -> bool:
        """True for a database server (MySQL/MariaDB, PostgreSQL), not a SQLite file."""
        return self.db_type in DB_SERVER_PORTS

    def endpoint(self) -> DbEndpoint:
        """Where the database server listens, from ``db_host`` (``ValueError`` if malformed).

        ``host:port``, ``host`` (the engine's default port), ``[v6]:port`` or
        ``socket:/path``; empty: the engine's default (127.0.0.1 for MySQL, as
        upstream's driver; the driver's default for PostgreSQL).
        """
        default_port = DB_SERVER_PORTS[self.db_type]
        raw = self.db_host.strip()
        if raw.startswith(DB_SOCKET_PREFIX):
            path = raw[len(DB_SOCKET_PREFIX) :]
            if not path.startswith("/"):
                raise ValueError(f"expected an absolute path after {DB_SOCKET_PREFIX!r}")
            return DbEndpoint(socket=path)
        if not raw:
            host = "127.0.0.1" if self.db_type == "mysql" else None
            return DbEndpoint(host=host, port=default_port)
        host, port = raw, default_port
        if raw.startswith("["):
            host, sep, tail = raw[1:].partition("]")
            if not sep or (tail and not tail.startswith(":")):
                raise ValueError("expected [ipv6-address]:port")
            port_text = tail[1:]
        elif raw.count(":") == 1:
            host, _, port_text = raw.partition(":")
        else:
            port_text = ""
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"invalid port {port_text!r}")
            port = int(port_text)
        if not host:
            raise ValueError("expected host:port or socket:/path")
        return DbEndpoint(host=host, port=port)


DB_SOCKET_PREFIX = "socket:"
DB_SERVER_PORTS = {"mysql": 3306, "postgres": 5432}


@dataclass(frozen=True)
class DbEndpoint:
    """A database server's address: ``host`` and ``port``, or a unix ``socket`` path."""

    host: str | None = None
    port: int | None = None
    socket: str | None = None

    def __str__(self) -> str:
        if self.socket:
            return f"socket {self.socket}"
        host = self.host or "localhost"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass
class CaddyConfig:
    """``[caddy-integration]`` (stored only)."""

    caddy: str = ""
    address: str = ""
    subdomain_prefix: str = ""
    cert_file: str = ""
    key_file: str = ""
    api_hostname: str = ""
    api_port: str = ""
    api_cert_file: str = ""
    api_key_file: str = ""
    tls_min: str = ""

    @property
    def enabled(self) -> bool:
        """True when any of the keys that enable the integration is set."""
        return bool(
            self.caddy or self.address or self.subdomain_prefix or self.cert_file or self.key_file
        )


@dataclass
class PushoverConfig:
    """``[pushover]``: 2FA delivery via Pushover."""

    api_token: str = ""
    user_key: str = ""


@dataclass
class SmtpConfig:
    """``[smtp]``: 2FA delivery via email."""

    server: str = ""
    sender_email: str = ""
    auth_username: str = ""
    auth_password: str = ""
    secure: bool = False


@dataclass
class NotificationsConfig:
    """``[notifications]`` (Plus alerting; stored only)."""

    notification_script_dir: str = "/usr/local/lib/rport/notification_scripts"
    log_storage_duration: float = _duration(7 * 86400.0, EXT_DURATION)
    cleanup_interval: float = _duration(86400.0, EXT_DURATION)


@dataclass
class MonitoringConfig:
    """``[monitoring]``: client measurements."""

    enabled: bool = True
    data_storage_duration: float = _duration(7 * 86400.0, DAY_DURATION)
    data_storage_days: int = 0  # deprecated; > 0 overrides data_storage_duration


@dataclass
class PlusPluginConfig:
    """``[plus-plugin]``: upstream's closed-source Plus plugin (refused when set)."""

    plugin_path: str = ""


@dataclass
class HAConfig:
    """``[ha]`` (rportd's own): high-availability role and peers."""

    role: str = "primary"
    cluster_secret: str = ""
    peers: list[str] = field(default_factory=list)
    primary: str = ""
    takeover_after: float = _duration(10.0)
    # How long a secondary that served clients waits for them to switch back to
    # the returned primary before it disconnects the rest.
    drain_grace: float = _duration(150.0)
    # How long a node that does not serve holds a knocking client's new_connection
    # (the client gives up after 30 s, and panics after three such timeouts).
    knock_hold: float = _duration(20.0)
    # etcd v3 client URLs; when set, leadership is an etcd lease (rportd/ha/coordinator.py).
    coordinator: list[str] = field(default_factory=list)
    # The lease TTL: a leader cut off from etcd stops serving within this time.
    coordinator_ttl: float = _duration(5.0)
    # A write to replicated data is answered only once a secondary has stored it,
    # or fails (HTTP 503) after ``synchronous_timeout``.
    synchronous: bool = False
    synchronous_timeout: float = _duration(5.0)

    @property
    def enabled(self) -> bool:
        """False for a standalone primary (no peers)."""
        return bool(self.peers) or self.role != "primary"

    @property
    def is_primary(self) -> bool:
        """True when configured as the primary node."""
        return self.role == "primary"


@dataclass
class MetricsConfig:
    """``[metrics]`` (rportd's own): Prometheus metrics on ``GET /metrics``."""

    enabled: bool = True
    # Its own listener (no authentication: give it a private address); empty: none.
    address: str = ""
    # Whether ``/metrics`` on the API listener needs an API login (any user).
    require_auth: bool = True


# Config attribute -> TOML section name.
SECTIONS: dict[str, str] = {
    "server": "server",
    "logging": "logging",
    "api": "api",
    "database": "database",
    "monitoring": "monitoring",
    "pushover": "pushover",
    "smtp": "smtp",
    "notifications": "notifications",
    "caddy": "caddy-integration",
    "plus_plugin": "plus-plugin",
    "ha": "ha",
    "metrics": "metrics",
}

# (section attribute, key) pairs whose values are secrets.
SECRET_KEYS: frozenset[tuple[str, str]] = frozenset(
    {
        ("server", "key_seed"),
        ("api", "jwt_secret"),
        ("database", "db_password"),
        ("smtp", "auth_password"),
        ("pushover", "api_token"),
        ("pushover", "user_key"),
        ("ha", "cluster_secret"),
    }
)
# Keys holding "<id>:<password>": only the password part is secret.
CREDENTIAL_KEYS: frozenset[tuple[str, str]] = frozenset({("server", "auth"), ("api", "auth")})
# Keys holding URLs that may embed a password.
URL_KEYS: frozenset[tuple[str, str]] = frozenset(
    {("server", "proxy"), ("api", "two_fa_token_delivery")}
)


def _mask_url(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:{MASK}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Config:
    """The whole rportd configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    pushover: PushoverConfig = field(default_factory=PushoverConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    caddy: CaddyConfig = field(default_factory=CaddyConfig)
    plus_plugin: PlusPluginConfig = field(default_factory=PlusPluginConfig)
    ha: HAConfig = field(default_factory=HAConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source_path: str | None = None
    warnings: list[str] = field(default_factory=list)

    def redacted(self) -> dict[str, Any]:
        """The configuration as a dict (TOML section names) with secrets masked."""
        result: dict[str, Any] = {}
        for attr, section in SECTIONS.items():
            values = dataclasses.asdict(getattr(self, attr))
            for key, value in values.items():
                if not value or not isinstance(value, str):
                    continue
                if (attr, key) in SECRET_KEYS:
                    values[key] = MASK
                elif (attr, key) in CREDENTIAL_KEYS:
                    user, sep, _ = value.partition(":")
                    values[key] = f"{user}:{MASK}" if sep else MASK
                elif (attr, key) in URL_KEYS:
                    values[key] = _mask_url(value)
            result[section] = values
        result["source_path"] = self.source_path
        return result
