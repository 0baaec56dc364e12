"""One audit log entry, its identity and its IP obfuscation."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rportd.gotypes import format_db_time, format_time, go_dumps, parse_time, utcnow
from rportd.store.database import Row

# Applications and actions as upstream names them.
APP_AUTH_USER = "auth.user"
APP_AUTH_USER_ME = "auth.user.me"
APP_AUTH_USER_ME_TOKEN = "auth.user.me.token"
APP_AUTH_USER_TOTP = "auth.user.totp"
APP_AUTH_USER_GROUP = "auth.user.group"
APP_AUTH_API_SESSION = "auth.api.session"
APP_AUTH_API_SESSIONS = "auth.api.sessions"
APP_CLIENT = "client"
APP_CLIENT_ACL = "client.acl"
APP_CLIENT_AUTH = "client.auth"
APP_CLIENT_GROUP = "client.group"
APP_CLIENT_TUNNEL = "client.tunnel"
APP_CLIENT_COMMAND = "client.command"
APP_CLIENT_SCRIPT = "client.script"
APP_LIBRARY_COMMAND = "library.command"
APP_LIBRARY_SCRIPT = "library.script"
APP_VAULT = "vault"
APP_SCHEDULE = "schedule"
APP_UPLOADS = "uploads"

ACTION_CREATE = "create"
ACTION_DELETE = "delete"
ACTION_UPDATE = "update"
ACTION_EXECUTE_START = "execute.start"
ACTION_EXECUTE_DONE = "execute.done"
ACTION_SUCCESS = "success"
ACTION_FAILED = "failed"

COLUMNS = (
    "timestamp",
    "username",
    "remote_ip",
    "application",
    "action",
    "affected_id",
    "client_id",
    "client_hostname",
    "request",
    "response",
)


def as_json_text(value: Any) -> str:
    """``request`` / ``response`` as upstream stores them: Go-style JSON text ("" for none)."""
    if value is None:
        return ""
    if isinstance(value, str | bytes):
        return value.decode() if isinstance(value, bytes) else value
    return go_dumps(value)


def obfuscate_ip(ip: str) -> str:
    """``a.b.c.x`` for IPv4 addresses (``use_ip_obfuscation``); anything else unchanged."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is None:
            return ip
        addr = addr.ipv4_mapped
    return ".".join(str(addr).split(".")[:3]) + ".x"


@dataclass
class AuditEntry:
    """What happened, who did it, from where, to what."""

    application: str
    action: str
    timestamp: datetime = field(default_factory=utcnow)
    username: str = ""
    remote_ip: str = ""
    affected_id: str = ""
    client_id: str = ""
    client_hostname: str = ""
    request: str = ""
    response: str = ""

    @property
    def identity(self) -> tuple[str, str, str, str, str, str]:
        """What makes an entry unique: the same call recorded twice is one entry."""
        return (
            format_db_time(self.timestamp) or "",
            self.application,
            self.action,
            self.affected_id,
            self.username,
            self.client_id,
        )

    @property
    def key(self) -> str:
        """The identity as text (sync-back key)."""
        return json.dumps(self.identity)

    def row(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in COLUMNS}
        values["timestamp"] = format_db_time(self.timestamp)
        return values

    def to_api(self) -> dict[str, Any]:
        """The ``GET /auditlog`` item."""
        values: dict[str, Any] = {name: getattr(self, name) for name in COLUMNS}
        values["timestamp"] = format_time(self.timestamp)
        return values

    def document(self) -> dict[str, Any]:
        """A JSON form for shipping entries between nodes."""
        return self.to_api()

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> AuditEntry:
        values = {name: str(doc.get(name) or "") for name in COLUMNS}
        stamp = parse_time(values.pop("timestamp")) or utcnow()
        return cls(timestamp=stamp, **values)

    @classmethod
    def from_row(cls, row: Row) -> AuditEntry:
        values = {name: "" if row.get(name) is None else str(row[name]) for name in COLUMNS}
        raw_time = values.pop("timestamp")
        try:
            stamp = parse_time(raw_time) or utcnow()
        except ValueError:
            stamp = utcnow()
        return cls(timestamp=stamp, **values)
