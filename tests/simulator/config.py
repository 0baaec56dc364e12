"""Simulator configuration, URL normalisation, remote-spec parsing, config JSON."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .gojson import go_duration, go_map

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_DENY",
    "DEFAULT_PROTECTED",
    "SimulatorConfig",
    "client_configuration",
    "normalize_server_url",
    "parse_remote",
    "split_auth",
]

DEFAULT_ALLOW = ["^/usr/bin/.*", "^/usr/local/bin/.*", "^C:\\\\Windows\\\\System32\\\\.*"]
DEFAULT_DENY = ["(\\||<|>|;|,|\\n|&)"]
DEFAULT_PROTECTED = ["/bin", "/sbin", "/boot", "/usr/bin", "/usr/sbin", "/dev", "/lib*", "/run"]


@dataclass
class SimulatorConfig:
    """Configuration of one simulated client (names follow the rport client config)."""

    server: str
    fallback_servers: list[str] = field(default_factory=list)
    auth: str = "client1:secret"  # "id:password", split at the first ':'
    client_id: str = ""  # "" -> a stable pseudo machine id (use_system_id) or ""
    name: str = ""  # "" -> hostname (use_hostname)
    fingerprint: str = ""
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    remotes: list[str] = field(default_factory=list)
    tunnel_allowed: list[str] = field(default_factory=list)
    version: str = "0.9.14"
    hostname: str = "sim-host"
    use_system_id: bool = True
    use_hostname: bool = True
    connect_jitter: float = 10.0
    server_switchback_interval: float = 120.0
    keep_alive: float = 180.0  # 0 disables the keepalive loop
    keep_alive_jitter: float = 5.0
    keep_alive_timeout: float = 30.0
    backoff_min: float = 5.0
    backoff_max: float = 600.0
    max_retry_count: int = -1
    new_connection_timeout: float = 30.0
    request_retry_wait: float = 1.0  # WithRetry: sleeps wait*1 then wait*4 (+0-0.5 s)
    request_retry_jitter: float = 0.5
    remote_commands_enabled: bool = True
    remote_scripts_enabled: bool = False
    commands_allow: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOW))
    commands_deny: list[str] = field(default_factory=lambda: list(DEFAULT_DENY))
    commands_order: list[str] = field(default_factory=lambda: ["allow", "deny"])
    send_back_limit: int = 4194304
    interpreter_aliases: dict[str, str] = field(default_factory=dict)
    kill_on_timeout: bool = True  # the real client leaves the process running
    # Seconds between starting a job and answering run_cmd (its cmd_result may come first,
    # as with the real client on a busy machine).
    run_cmd_reply_delay: float = 0.0
    monitoring_enabled: bool = True
    monitoring_interval: float = 60.0
    file_reception_enabled: bool = True
    file_reception_protected: list[str] = field(default_factory=lambda: list(DEFAULT_PROTECTED))
    attributes_file: bool = True  # False: update_client_metadata "attributes file path not set"
    # client.attributes_file_path; "" = <data_dir>/attributes.json. Read at start (§5.8).
    attributes_file_path: str = ""
    data_dir: str | None = None  # temp dir if None
    double_ping_reply: bool = False  # clients 0.8.2-0.9.6
    session_id: str | None = None
    send_updates_status: bool = False
    updates_status: dict[str, Any] | None = None  # payload override
    ip_addresses: tuple[str, str] | None = None  # (ipv4, ipv6) "fetched" from ip_api_url
    ip_refresh_interval: float = 1800.0
    headers: dict[str, str] = field(default_factory=dict)  # connection.headers
    probe_after_bad_handshake: bool = True  # HEAD ws→http after a non-101 answer (§2.3)
    fragment_size: int | None = 1024  # gorilla WriteBufferSize; None = one frame per write
    handshake_timeout: float | None = None  # Go has none once the WebSocket is up
    crash_on_new_connection_timeout: bool = True  # rand.Intn(0) panic after 3 timeouts
    connection_request_overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # free text for logs

    @property
    def auth_user(self) -> str:
        """Auth id (SSH user name)."""
        return split_auth(self.auth)[0]

    @property
    def auth_pass(self) -> str:
        """Password."""
        return split_auth(self.auth)[1]

    def effective_client_id(self) -> str:
        """The ``ID`` the client sends in ``new_connection``."""
        if self.client_id:
            return self.client_id
        if self.use_system_id:
            return hashlib.md5(f"{self.auth_user}@{self.hostname}".encode()).hexdigest()
        return ""

    def effective_name(self) -> str:
        """The ``Name`` the client sends in ``new_connection``."""
        if self.name:
            return self.name
        return self.hostname if self.use_hostname else ""

    def servers(self) -> list[str]:
        """``[server] + fallback_servers``, normalised (§2.1)."""
        return [normalize_server_url(s) for s in [self.server, *self.fallback_servers]]


def split_auth(auth: str) -> tuple[str, str]:
    """Split ``id:password`` at the first ``:``."""
    user, _, pw = auth.partition(":")
    return user, pw


def normalize_server_url(url: str) -> str:
    """Normalise a configured server like the client does (§2.1)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    host_part = netloc.rsplit("@", 1)[-1]
    has_port = bool(re.search(r":\d*$", host_part)) and not host_part.endswith("]")
    if not has_port:
        netloc += ":443" if scheme in ("https", "wss") else ":80"
    if scheme.startswith("http"):
        scheme = "ws" + scheme[4:]
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


# --------------------------------------------------------------------------- remotes

_PROTO_RE = re.compile(r"(.*)/(tcp|udp|tcp\+udp)$")
_PORT_RE = re.compile(r"^\d+$")


def parse_remote(spec: str) -> dict[str, Any]:
    """Parse ``[lhost:][lport:]rhost:rport[/proto]`` into a Remote JSON object (§4.3)."""
    protocol = "tcp"
    m = _PROTO_RE.match(spec)
    if m:
        spec, protocol = m.group(1), m.group(2)
    parts = spec.split(":")
    if len(parts) >= 5:
        raise ValueError("Invalid remote")
    lhost = lport = rhost = rport = ""
    for p in reversed(parts):
        if _PORT_RE.match(p):
            if rport == "":
                rport = p
            else:
                lport = p
            continue
        if rport == "" and lport == "":
            raise ValueError("Missing ports")
        if any(ord(c) < 0x20 or c == " " for c in p):
            raise ValueError("Invalid host")
        if rhost == "":
            rhost = p
        else:
            lhost = p
    if lhost == "" and lport != "":
        lhost = "0.0.0.0"
    if rhost == "":
        rhost = "127.0.0.1"
    return remote_json(protocol=protocol, lhost=lhost, lport=lport, rhost=rhost, rport=rport)


def remote_json(
    *, protocol: str = "tcp", lhost: str = "", lport: str = "", rhost: str = "", rport: str = ""
) -> dict[str, Any]:
    """A Remote object with every key in Go field order."""
    return {
        "name": "",
        "protocol": protocol,
        "lhost": lhost,
        "lport": lport,
        "lport_random": False,
        "owner": "",
        "rhost": rhost,
        "rport": rport,
        "scheme": None,
        "acl": None,
        "idle_timeout_minutes": 0,
        "auto_close": 0,
        "http_proxy": False,
        "host_header": "",
        "auth_user": "",
        "auth_password": "",
        "tunnel_url": "",
    }


# --------------------------------------------------------------------------- config JSON


def client_configuration(cfg: SimulatorConfig, data_dir: str) -> dict[str, Any]:
    """The ``ClientConfiguration`` object of §4.4 (contains the secret, like the client)."""
    tunnels = [parse_remote(r) for r in cfg.remotes]
    return {
        "client": {
            "server": cfg.server,
            "fallback_servers": list(cfg.fallback_servers) or None,
            "server_switchback_interval": go_duration(cfg.server_switchback_interval),
            "fingerprint": cfg.fingerprint,
            "auth": cfg.auth,
            "proxy": "",
            "id": cfg.client_id,
            "use_system_id": cfg.use_system_id,
            "name": cfg.name,
            "use_hostname": cfg.use_hostname,
            "tags": list(cfg.tags) or None,
            "labels": go_map(cfg.labels) or None,
            "remotes": list(cfg.remotes) or None,
            "tunnel_allowed": list(cfg.tunnel_allowed) or None,
            "allow_root": False,
            "updates_interval": go_duration(4 * 3600),
            "data_dir": data_dir,
            "bind_interface": "",
            "ip_api_url": "https://myip.openrport.io" if cfg.ip_addresses else "",
            "ip_refresh_min": 30,
            "proxy_url": None,
            "tunnels": tunnels or None,
            "auth_user": cfg.auth_user,
            "auth_pass": cfg.auth_pass,
        },
        "connection": {
            "keep_alive": go_duration(cfg.keep_alive),
            "keep_alive_timeout": go_duration(cfg.keep_alive_timeout),
            "max_retry_count": cfg.max_retry_count,
            "max_retry_interval": go_duration(300),
            "headers": [f"{k}: {v}" for k, v in cfg.headers.items()] or None,
            "hostname": "",
            "watchdog_integration": False,
            "http_headers": go_map(
                {"User-Agent": [cfg.headers.get("User-Agent", f"rport {cfg.version}")]}
            ),
        },
        "logging": {"log_file": {"File": None}, "log_level": 1},
        "remote_commands": {
            "enabled": cfg.remote_commands_enabled,
            "send_back_limit": cfg.send_back_limit,
            "allow": list(cfg.commands_allow),
            "deny": list(cfg.commands_deny),
            "order": list(cfg.commands_order),
            "allow_regexp": [{} for _ in cfg.commands_allow],
            "deny_regexp": [{} for _ in cfg.commands_deny],
        },
        "remote_scripts": {"enabled": cfg.remote_scripts_enabled},
        "monitoring": {
            "enabled": cfg.monitoring_enabled,
            "interval": go_duration(cfg.monitoring_interval),
            "fs_type_include": ["ext3", "ext4", "xfs", "jfs", "ntfs", "btrfs", "hfs", "apfs"],
            "fs_path_exclude": None,
            "fs_path_exclude_recurse": False,
            "fs_identify_mountpoints_by_device": True,
            "pm_enabled": True,
            "pm_kerneltasks_enabled": True,
            "pm_max_number_processes": 500,
            "net_lan": None,
            "net_wan": None,
            "lan_card": None,
            "wan_card": None,
        },
        "file_reception": {
            "protected": list(cfg.file_reception_protected),
            "enabled": cfg.file_reception_enabled,
        },
        "interpreter_aliases": go_map(cfg.interpreter_aliases) or {},
        "interpreter_aliases_encodings": {},
    }


def timezone_string() -> str:
    """``"<abbr> (UTC±hh:mm)"`` like Go's ``Format("MST (UTC-07:00)")``."""
    tm = time.localtime()
    off = tm.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return f"{tm.tm_zone} (UTC{sign}{off // 3600:02d}:{(off % 3600) // 60:02d})"
