"""JSON payloads of the rport global requests (protocol.md §4-§5, §10).

Decoding is tolerant the way Go's decoder is: keys match case-insensitively,
unknown keys are ignored and missing ones take zero values, because older
clients send subsets (§11). Encoding uses Go's exact key spelling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rportd.gotypes import ci_get, go_dumpb


class PayloadError(ValueError):
    """A payload that is not the JSON document it should be."""


def decode_object(payload: bytes, what: str) -> dict[str, Any]:
    """Parse ``payload`` as a JSON object or raise :class:`PayloadError`."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"invalid {what}: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"invalid {what}: expected a JSON object")
    return value


def _str(obj: dict[str, Any], key: str, default: str = "") -> str:
    value = ci_get(obj, key, default)
    return value if isinstance(value, str) else default


def _int(obj: dict[str, Any], key: str) -> int:
    value = ci_get(obj, key, 0)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _bool(obj: dict[str, Any], key: str) -> bool:
    return ci_get(obj, key, False) is True


def _str_list(obj: dict[str, Any], key: str) -> list[str] | None:
    value = ci_get(obj, key)
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]


def _str_map(obj: dict[str, Any], key: str) -> dict[str, str] | None:
    value = ci_get(obj, key)
    if not isinstance(value, dict):
        return None
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


@dataclass(slots=True)
class Remote:
    """A tunnel definition as the client and the server exchange it (§4.3)."""

    rhost: str = "127.0.0.1"
    rport: str = ""
    lhost: str = ""
    lport: str = ""
    lport_random: bool = False
    protocol: str = "tcp"
    name: str = ""
    owner: str = ""
    scheme: str | None = None
    acl: str | None = None
    idle_timeout_minutes: int = 0
    auto_close: int = 0  # Go Duration, nanoseconds
    http_proxy: bool = False
    host_header: str = ""
    auth_user: str = ""
    auth_password: str = ""
    tunnel_url: str = ""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Remote:
        scheme = ci_get(obj, "scheme")
        acl = ci_get(obj, "acl")
        return cls(
            rhost=_str(obj, "rhost"),
            rport=_str(obj, "rport"),
            lhost=_str(obj, "lhost"),
            lport=_str(obj, "lport"),
            lport_random=_bool(obj, "lport_random"),
            protocol=_str(obj, "protocol") or "tcp",
            name=_str(obj, "name"),
            owner=_str(obj, "owner"),
            scheme=scheme if isinstance(scheme, str) else None,
            acl=acl if isinstance(acl, str) else None,
            idle_timeout_minutes=_int(obj, "idle_timeout_minutes"),
            auto_close=_int(obj, "auto_close"),
            http_proxy=_bool(obj, "http_proxy"),
            host_header=_str(obj, "host_header"),
            auth_user=_str(obj, "auth_user"),
            auth_password=_str(obj, "auth_password"),
            tunnel_url=_str(obj, "tunnel_url"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "lhost": self.lhost,
            "lport": self.lport,
            "lport_random": self.lport_random,
            "owner": self.owner,
            "rhost": self.rhost,
            "rport": self.rport,
            "scheme": self.scheme,
            "acl": self.acl,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "auto_close": self.auto_close,
            "http_proxy": self.http_proxy,
            "host_header": self.host_header,
            "auth_user": self.auth_user,
            "auth_password": self.auth_password,
            "tunnel_url": self.tunnel_url,
        }

    @property
    def local_specified(self) -> bool:
        return bool(self.lport)

    def key(self) -> str:
        """Identity of a tunnel as upstream compares them: local, remote, protocol, ACL."""
        text = f"{self.lhost}:{self.lport}:{self.destination}"
        if self.protocol != "tcp":
            text += "/" + self.protocol
        if self.acl is not None:
            text += f"(acl:{self.acl})"
        return text

    @property
    def destination(self) -> str:
        """``host:port`` as the client dials it (IPv6 hosts bracketed)."""
        host = f"[{self.rhost}]" if ":" in self.rhost else self.rhost
        return f"{host}:{self.rport}"


@dataclass(slots=True)
class ConnectionRequest:
    """The ``new_connection`` payload (§4.2; untagged Go struct)."""

    id: str = ""
    name: str = ""
    session_id: str = ""
    os: str = ""
    os_full_name: str = ""
    os_version: str = ""
    os_virtualization_system: str = ""
    os_virtualization_role: str = ""
    os_arch: str = ""
    os_family: str = ""
    os_kernel: str = ""
    version: str = ""
    hostname: str = ""
    cpu_family: str = ""
    cpu_model: str = ""
    cpu_model_name: str = ""
    cpu_vendor: str = ""
    num_cpus: int = 0
    memory_total: int = 0
    timezone: str = ""
    ipv4: list[str] | None = None
    ipv6: list[str] | None = None
    tags: list[str] | None = None
    labels: dict[str, str] | None = None
    remotes: list[Remote] = field(default_factory=list)
    client_configuration: dict[str, Any] | None = None

    @classmethod
    def decode(cls, payload: bytes) -> ConnectionRequest:
        """Parse the payload; :class:`PayloadError` if it is not a JSON object."""
        try:
            obj = decode_object(payload, "connection request")
        except PayloadError:
            raise PayloadError("invalid connection request: Invalid JSON config") from None
        remotes_raw = ci_get(obj, "Remotes")
        remotes = (
            [Remote.from_json(r) for r in remotes_raw or [] if isinstance(r, dict)]
            if isinstance(remotes_raw, list)
            else []
        )
        config = ci_get(obj, "ClientConfiguration")
        return cls(
            id=_str(obj, "ID"),
            name=_str(obj, "Name"),
            session_id=_str(obj, "SessionID"),
            os=_str(obj, "OS"),
            os_full_name=_str(obj, "OSFullName"),
            os_version=_str(obj, "OSVersion"),
            os_virtualization_system=_str(obj, "OSVirtualizationSystem"),
            os_virtualization_role=_str(obj, "OSVirtualizationRole"),
            os_arch=_str(obj, "OSArch"),
            os_family=_str(obj, "OSFamily"),
            os_kernel=_str(obj, "OSKernel"),
            version=_str(obj, "Version"),
            hostname=_str(obj, "Hostname"),
            cpu_family=_str(obj, "CPUFamily"),
            cpu_model=_str(obj, "CPUModel"),
            cpu_model_name=_str(obj, "CPUModelName"),
            cpu_vendor=_str(obj, "CPUVendor"),
            num_cpus=_int(obj, "NumCPUs"),
            memory_total=_int(obj, "MemoryTotal"),
            timezone=_str(obj, "Timezone"),
            ipv4=_str_list(obj, "IPv4"),
            ipv6=_str_list(obj, "IPv6"),
            tags=_str_list(obj, "Tags"),
            labels=_str_map(obj, "Labels"),
            remotes=remotes,
            client_configuration=config if isinstance(config, dict) else None,
        )


def encode_remotes(remotes: list[Remote] | None) -> bytes:
    """The ``new_connection`` success payload: the Remote array, or ``null``."""
    if remotes is None:
        return b"null"
    return go_dumpb([r.to_json() for r in remotes])


def encode_capabilities(server_version: str, monitoring: bool) -> bytes:
    """The ``put_capabilities`` payload (§5.1)."""
    return go_dumpb(
        {
            "ServerVersion": server_version,
            "MonitoringVersion": 1 if monitoring else 0,
            "IPAddressesVersion": 1,
        }
    )


def encode_check_port(host_port: str, timeout_ns: int) -> bytes:
    """The ``check_port`` request (§5.2)."""
    return go_dumpb({"HostPort": host_port, "Timeout": timeout_ns})


@dataclass(frozen=True, slots=True)
class CheckPortResult:
    """The ``check_port`` reply."""

    open: bool
    error: str

    @classmethod
    def decode(cls, payload: bytes) -> CheckPortResult:
        obj = decode_object(payload, "check_port response")
        return cls(open=_bool(obj, "Open"), error=_str(obj, "ErrMsg"))


def encode_check_tunnel_allowed(destination: str) -> bytes:
    """The ``check_tunnel_allowed`` request (§5.3)."""
    return go_dumpb({"Remote": destination})


def decode_is_allowed(payload: bytes) -> bool:
    """The ``check_tunnel_allowed`` reply."""
    return _bool(decode_object(payload, "check_tunnel_allowed response"), "IsAllowed")


# Secrets inside the ``client`` section of ClientConfiguration (§4.4).
_SECRET_KEYS = frozenset({"auth", "auth_pass", "proxy"})


def redact_client_configuration(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """Remove the client's credentials from its reported configuration."""
    if config is None:
        return None
    section = config.get("client")
    if not isinstance(section, dict):
        return config
    cleaned = {k: "********" if k in _SECRET_KEYS and v else v for k, v in section.items()}
    proxy_url = cleaned.get("proxy_url")
    if isinstance(proxy_url, dict) and proxy_url.get("User"):
        cleaned["proxy_url"] = {**proxy_url, "User": {}}
    return {**config, "client": cleaned}
