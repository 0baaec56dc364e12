"""Which API calls are audited, and what each entry holds (upstream's choices, route by route).

Keys are ``(method, path)`` with the ``/api/v1`` prefix removed and every path parameter
written ``{}``, so the table does not depend on how a view names its parameters.

Value sources:

* ``affected_id``: ``path:N`` (N-th path parameter), ``body:key`` (request JSON),
  ``data:key`` (response ``data``), ``user`` (the caller's username),
  ``token`` (``[username,prefix]`` of a new API token);
* ``request``: ``body`` (request JSON), ``query`` (query parameters),
  ``force`` (``{"force": bool}``);
* ``response``: ``data`` (the response envelope's ``data``);
* ``client``: ``path:0`` (the client in the path) or ``body:client_id``.

Calls that are not plain request/response (WebSockets, job results arriving later,
uploads delivered in the background) are recorded by their code through
``RportServer.auditlog.add``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rportd.auditlog.entry import (
    ACTION_CREATE,
    ACTION_DELETE,
    ACTION_EXECUTE_START,
    ACTION_UPDATE,
    APP_AUTH_API_SESSION,
    APP_AUTH_API_SESSIONS,
    APP_AUTH_USER,
    APP_AUTH_USER_GROUP,
    APP_AUTH_USER_ME,
    APP_AUTH_USER_ME_TOKEN,
    APP_AUTH_USER_TOTP,
    APP_CLIENT,
    APP_CLIENT_ACL,
    APP_CLIENT_AUTH,
    APP_CLIENT_COMMAND,
    APP_CLIENT_GROUP,
    APP_CLIENT_SCRIPT,
    APP_CLIENT_TUNNEL,
    APP_LIBRARY_COMMAND,
    APP_LIBRARY_SCRIPT,
    APP_SCHEDULE,
    APP_UPLOADS,
    APP_VAULT,
)

API_PREFIX = "/api/v1"
_PARAM = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class AuditRule:
    """How one route is audited."""

    application: str
    action: str
    affected_id: str = ""
    request: str = ""
    response: str = ""
    client: str = ""
    hidden: tuple[str, ...] = ()  # request keys never stored (secrets)


def route_key(method: str, canonical: str) -> tuple[str, str]:
    """The table key of an aiohttp route (``/api/v1/clients/{client_id}`` → ``/clients/{}``)."""
    path = canonical[len(API_PREFIX) :] if canonical.startswith(API_PREFIX) else canonical
    return method.upper(), _PARAM.sub("{}", path)


def _rules(*entries: tuple[str, str, AuditRule]) -> dict[tuple[str, str], AuditRule]:
    return {(method, path): rule for method, path, rule in entries}


R = AuditRule

AUDITED_ROUTES: dict[tuple[str, str], AuditRule] = _rules(
    # own account
    ("PUT", "/me", R(APP_AUTH_USER_ME, ACTION_UPDATE)),
    ("POST", "/me/tokens", R(APP_AUTH_USER_ME_TOKEN, ACTION_CREATE, affected_id="token")),
    (
        "PUT",
        "/me/tokens/{}",
        R(APP_AUTH_USER_ME_TOKEN, ACTION_UPDATE, affected_id="user", request="body"),
    ),
    ("DELETE", "/me/tokens/{}", R(APP_AUTH_USER_ME_TOKEN, ACTION_DELETE, affected_id="user")),
    ("POST", "/me/totp-secret", R(APP_AUTH_USER_TOTP, ACTION_CREATE, affected_id="user")),
    ("DELETE", "/me/totp-secret", R(APP_AUTH_USER_TOTP, ACTION_DELETE, affected_id="user")),
    # users, user groups, sessions
    ("POST", "/users", R(APP_AUTH_USER, ACTION_CREATE, affected_id="body:username")),
    ("PUT", "/users/{}", R(APP_AUTH_USER, ACTION_UPDATE, affected_id="path:0")),
    ("DELETE", "/users/{}", R(APP_AUTH_USER, ACTION_DELETE, affected_id="path:0")),
    ("DELETE", "/users/{}/totp-secret", R(APP_AUTH_USER_TOTP, ACTION_DELETE, affected_id="path:0")),
    ("DELETE", "/users/{}/sessions", R(APP_AUTH_API_SESSIONS, ACTION_DELETE, affected_id="path:0")),
    (
        "DELETE",
        "/users/{}/sessions/{}",
        R(APP_AUTH_API_SESSION, ACTION_DELETE, affected_id="path:0"),
    ),
    (
        "PUT",
        "/user-groups/{}",
        R(APP_AUTH_USER_GROUP, ACTION_UPDATE, "path:0", request="body", response="data"),
    ),
    ("DELETE", "/user-groups/{}", R(APP_AUTH_USER_GROUP, ACTION_DELETE, affected_id="path:0")),
    # client credentials, client groups, clients
    ("POST", "/clients-auth", R(APP_CLIENT_AUTH, ACTION_CREATE, affected_id="body:id")),
    (
        "DELETE",
        "/clients-auth/{}",
        R(APP_CLIENT_AUTH, ACTION_DELETE, affected_id="path:0", request="force"),
    ),
    ("POST", "/client-groups", R(APP_CLIENT_GROUP, ACTION_CREATE, "body:id", request="body")),
    ("PUT", "/client-groups/{}", R(APP_CLIENT_GROUP, ACTION_UPDATE, "path:0", request="body")),
    ("DELETE", "/client-groups/{}", R(APP_CLIENT_GROUP, ACTION_DELETE, affected_id="path:0")),
    ("DELETE", "/clients/{}", R(APP_CLIENT, ACTION_DELETE, affected_id="path:0")),
    ("POST", "/clients/{}/acl", R(APP_CLIENT_ACL, ACTION_UPDATE, "path:0", request="body")),
    # tunnels
    (
        "PUT",
        "/clients/{}/tunnels",
        R(
            APP_CLIENT_TUNNEL,
            ACTION_CREATE,
            "data:id",
            request="query",
            response="data",
            client="path:0",
        ),
    ),
    (
        "DELETE",
        "/clients/{}/tunnels/{}",
        R(APP_CLIENT_TUNNEL, ACTION_DELETE, "path:1", request="force", client="path:0"),
    ),
    (
        "PUT",
        "/clients/{}/tunnels/{}/acl",
        R(APP_CLIENT_TUNNEL, ACTION_UPDATE, "path:1", request="body", client="path:0"),
    ),
    # commands and scripts
    (
        "POST",
        "/clients/{}/commands",
        R(
            APP_CLIENT_COMMAND,
            ACTION_EXECUTE_START,
            "data:jid",
            request="body",
            response="data",
            client="path:0",
        ),
    ),
    (
        "POST",
        "/commands",
        R(APP_CLIENT_COMMAND, ACTION_EXECUTE_START, "data:jid", request="body", response="data"),
    ),
    (
        "POST",
        "/clients/{}/scripts",
        R(
            APP_CLIENT_SCRIPT,
            ACTION_EXECUTE_START,
            "data:jid",
            request="body",
            response="data",
            client="path:0",
        ),
    ),
    (
        "POST",
        "/scripts",
        R(APP_CLIENT_SCRIPT, ACTION_EXECUTE_START, "data:jid", request="body", response="data"),
    ),
    # library
    (
        "POST",
        "/library/commands",
        R(APP_LIBRARY_COMMAND, ACTION_CREATE, "data:id", request="body", response="data"),
    ),
    (
        "PUT",
        "/library/commands/{}",
        R(APP_LIBRARY_COMMAND, ACTION_UPDATE, "path:0", request="body", response="data"),
    ),
    ("DELETE", "/library/commands/{}", R(APP_LIBRARY_COMMAND, ACTION_DELETE, "path:0")),
    (
        "POST",
        "/library/scripts",
        R(APP_LIBRARY_SCRIPT, ACTION_CREATE, "data:id", request="body", response="data"),
    ),
    (
        "PUT",
        "/library/scripts/{}",
        R(APP_LIBRARY_SCRIPT, ACTION_UPDATE, "path:0", request="body", response="data"),
    ),
    ("DELETE", "/library/scripts/{}", R(APP_LIBRARY_SCRIPT, ACTION_DELETE, "path:0")),
    # vault (the secret value is never stored in the audit log)
    ("POST", "/vault-admin/init", R(APP_VAULT, "init")),
    ("POST", "/vault-admin/sesame", R(APP_VAULT, "unlock")),
    ("DELETE", "/vault-admin/sesame", R(APP_VAULT, "lock")),
    (
        "POST",
        "/vault",
        R(
            APP_VAULT,
            ACTION_CREATE,
            "data:id",
            request="body",
            client="body:client_id",
            hidden=("value",),
        ),
    ),
    (
        "PUT",
        "/vault/{}",
        R(
            APP_VAULT,
            ACTION_UPDATE,
            "path:0",
            request="body",
            client="body:client_id",
            hidden=("value",),
        ),
    ),
    ("DELETE", "/vault/{}", R(APP_VAULT, ACTION_DELETE, "path:0")),
    # schedules and uploads
    (
        "POST",
        "/schedules",
        R(APP_SCHEDULE, ACTION_CREATE, "data:id", request="body", response="data"),
    ),
    (
        "PUT",
        "/schedules/{}",
        R(APP_SCHEDULE, ACTION_UPDATE, "path:0", request="body", response="data"),
    ),
    ("DELETE", "/schedules/{}", R(APP_SCHEDULE, ACTION_DELETE, "path:0")),
    ("POST", "/files", R(APP_UPLOADS, ACTION_CREATE, "data:uuid", response="data")),
)
