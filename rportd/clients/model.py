"""The client record: what the server knows about one RPort client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from rportd.gotypes import format_db_time, format_time, go_dumps
from rportd.wire.messages import ConnectionRequest, redact_client_configuration

if TYPE_CHECKING:
    from rportd.clients.connection import ClientConnection

CONNECTED = "connected"
DISCONNECTED = "disconnected"

# ``fields[clients]`` names in upstream's payload order, with the JSON key each selects.
CLIENT_FIELDS: dict[str, str] = {
    "id": "id",
    "name": "name",
    "address": "address",
    "hostname": "hostname",
    "os": "os",
    "os_full_name": "os_full_name",
    "os_version": "os_version",
    "os_arch": "os_arch",
    "os_family": "os_family",
    "os_kernel": "os_kernel",
    "os_virtualization_system": "os_virtualization_system",
    "os_virtualization_role": "os_virtualization_role",
    "num_cpus": "num_cpus",
    "cpu_family": "cpu_family",
    "cpu_model": "cpu_model",
    "cpu_model_name": "cpu_model_name",
    "cpu_vendor": "cpu_vendor",
    "mem_total": "mem_total",
    "timezone": "timezone",
    "client_auth_id": "client_auth_id",
    "version": "version",
    "disconnected_at": "disconnected_at",
    "last_heartbeat_at": "last_heartbeat_at",
    "connection_state": "connection_state",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "tags": "tags",
    "allowed_user_groups": "allowed_user_groups",
    "tunnels": "tunnels",
    "updates_status": "updates_status",
    "ip_addresses": "ext_ip_addresses",
    "client_configuration": "client_configuration",
    "groups": "groups",
    "labels": "labels",
}

# Keys of the ``details`` JSON column of ``clients.db`` (storage.md §1).
_DETAIL_STRINGS = (
    "name",
    "os",
    "os_arch",
    "os_family",
    "os_kernel",
    "os_full_name",
    "os_version",
    "os_virtualization_system",
    "os_virtualization_role",
    "cpu_family",
    "cpu_model",
    "cpu_model_name",
    "cpu_vendor",
    "timezone",
    "hostname",
    "version",
    "address",
)


class TunnelLike(Protocol):
    """Anything listed in a client's ``tunnels``."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class StoredTunnelState:
    """A tunnel as persisted in the client record (not running)."""

    data: dict[str, Any]
    # Defined on another HA node: re-created where possible, never a reason to refuse.
    from_peer: bool = False

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass(frozen=True, slots=True)
class Attributes:
    """A client's tags and labels, as its attributes file holds them."""

    tags: list[str] | None
    labels: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        """``{"tags", "labels"}`` with label keys sorted (a Go map)."""
        labels = None if self.labels is None else dict(sorted(self.labels.items()))
        return {"tags": self.tags, "labels": labels}


@dataclass(slots=True, eq=False)
class Client:
    """A known client, connected or not."""

    id: str
    client_auth_id: str = ""
    name: str = ""
    os: str = ""
    os_arch: str = ""
    os_family: str = ""
    os_kernel: str = ""
    os_full_name: str = ""
    os_version: str = ""
    os_virtualization_system: str = ""
    os_virtualization_role: str = ""
    cpu_family: str = ""
    cpu_model: str = ""
    cpu_model_name: str = ""
    cpu_vendor: str = ""
    num_cpus: int = 0
    mem_total: int = 0
    timezone: str = ""
    hostname: str = ""
    version: str = ""
    address: str = ""
    ipv4: list[str] | None = None
    ipv6: list[str] | None = None
    tags: list[str] | None = None
    labels: dict[str, str] | None = None
    tunnels: list[TunnelLike] = field(default_factory=list)
    allowed_user_groups: list[str] | None = None
    updates_status: dict[str, Any] | None = None
    ext_ip_addresses: dict[str, Any] | None = None
    client_configuration: dict[str, Any] | None = None
    disconnected_at: datetime | None = None
    # Runtime only, never persisted.
    last_heartbeat_at: datetime | None = None
    session_id: str = ""
    connection: ClientConnection | None = None
    next_tunnel_id: int = 0
    connected_at: datetime | None = None
    # Tunnels re-established from the stored record at this connection, until a newer
    # record from the HA node that served the client last has been followed.
    restored_tunnels: list[TunnelLike] | None = None

    @property
    def connected(self) -> bool:
        return self.disconnected_at is None

    @property
    def connection_state(self) -> str:
        return CONNECTED if self.connected else DISCONNECTED

    def attributes(self) -> Attributes:
        """The tags and labels (``/clients/{id}/attributes``)."""
        return Attributes(self.tags, self.labels)

    def set_attributes(self, attributes: Attributes) -> None:
        """Take tags and labels the client accepted (``update_client_metadata``)."""
        self.tags = attributes.tags
        self.labels = attributes.labels

    def update_from_request(
        self, request: ConnectionRequest, client_auth_id: str, address: str
    ) -> None:
        """Overwrite the reported facts with a fresh ``new_connection`` request."""
        self.client_auth_id = client_auth_id
        self.name = request.name
        self.os = request.os
        self.os_arch = request.os_arch
        self.os_family = request.os_family
        self.os_kernel = request.os_kernel
        self.os_full_name = request.os_full_name
        self.os_version = request.os_version
        self.os_virtualization_system = request.os_virtualization_system
        self.os_virtualization_role = request.os_virtualization_role
        self.cpu_family = request.cpu_family
        self.cpu_model = request.cpu_model
        self.cpu_model_name = request.cpu_model_name
        self.cpu_vendor = request.cpu_vendor
        self.num_cpus = request.num_cpus
        self.mem_total = request.memory_total
        self.timezone = request.timezone
        self.hostname = request.hostname
        self.version = request.version
        self.address = address
        self.ipv4 = request.ipv4
        self.ipv6 = request.ipv6
        self.tags = request.tags
        self.labels = request.labels
        self.client_configuration = redact_client_configuration(request.client_configuration)
        self.session_id = request.session_id
        self.tunnels = []

    def row(self) -> dict[str, Any]:
        """The ``clients`` row of ``clients.db`` (also what sync back ships)."""
        return {
            "id": self.id,
            "client_auth_id": self.client_auth_id,
            "disconnected_at": format_db_time(self.disconnected_at),
            "details": go_dumps(self.details()),
        }

    def details(self) -> dict[str, Any]:
        """The ``details`` JSON object stored in ``clients.db``."""
        out: dict[str, Any] = {"num_cpus": self.num_cpus, "mem_total": self.mem_total}
        for key in _DETAIL_STRINGS:
            out[key] = getattr(self, key)
        out.update(
            ipv4=self.ipv4,
            ipv6=self.ipv6,
            tags=self.tags,
            labels=self.labels,
            tunnels=[t.to_json() for t in self.tunnels],
            allowed_user_groups=self.allowed_user_groups,
            updates_status=self.updates_status,
            ext_ip_addresses=self.ext_ip_addresses,
            client_configuration=self.client_configuration,
        )
        return out

    @classmethod
    def from_row(
        cls, client_id: str, client_auth_id: str, disconnected_at: datetime | None, details: str
    ) -> Client:
        """Rebuild a client from its ``clients.db`` row."""
        data = json.loads(details) if details else {}
        if not isinstance(data, dict):
            data = {}
        client = cls(id=client_id, client_auth_id=client_auth_id, disconnected_at=disconnected_at)
        for key in _DETAIL_STRINGS:
            value = data.get(key)
            if isinstance(value, str):
                setattr(client, key, value)
        for key in ("num_cpus", "mem_total"):
            value = data.get(key)
            if isinstance(value, int):
                setattr(client, key, value)
        for key in ("ipv4", "ipv6", "tags", "allowed_user_groups"):
            value = data.get(key)
            if isinstance(value, list):
                setattr(client, key, [str(v) for v in value])
        labels = data.get("labels")
        if isinstance(labels, dict):
            client.labels = {str(k): str(v) for k, v in labels.items()}
        for key in ("updates_status", "ext_ip_addresses", "client_configuration"):
            value = data.get(key)
            if isinstance(value, dict):
                setattr(client, key, value)
        tunnels = data.get("tunnels")
        if isinstance(tunnels, list):
            stored = [StoredTunnelState(t) for t in tunnels if isinstance(t, dict)]
            ids = [int(t.data["id"]) for t in stored if str(t.data.get("id", "")).isdigit()]
            client.tunnels = list(stored)
            client.next_tunnel_id = max(ids, default=0)
        return client

    def field_value(self, name: str, groups: list[str]) -> Any:
        """The API value of ``fields[clients]`` name ``name``."""
        if name == "tunnels":
            return [t.to_json() for t in self.tunnels]
        if name in ("disconnected_at", "last_heartbeat_at"):
            return format_time(getattr(self, name))
        if name == "ip_addresses":
            return self.ext_ip_addresses
        if name == "groups":
            return groups
        return getattr(self, name)

    def to_api(self, groups: list[str], fields: list[str] | None = None) -> dict[str, Any]:
        """The API object (api.md §5.4): every field, or only ``fields``, in upstream's order."""
        wanted = set(fields) if fields is not None else None
        return {
            key: self.field_value(name, groups)
            for name, key in CLIENT_FIELDS.items()
            if wanted is None or name in wanted
        }
