"""Audit middleware: one audit entry per successful mutating call listed in the route table.

A handler can refine its entry through :func:`audit_note` (affected id, request or
response to store, the clients a multi-client call targeted, or skip the entry).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.guards import Handler
from rportd.auditlog.entry import AuditEntry, as_json_text
from rportd.auditlog.routes import AUDITED_ROUTES, AuditRule, route_key
from rportd.httputil import client_ip

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_UNSET: Any = object()


@dataclass
class AuditNote:
    """What a handler tells the audit middleware about its call (all optional)."""

    affected_id: str | None = None
    request: Any = _UNSET
    response: Any = _UNSET
    client_id: str | None = None
    clients: list[tuple[str, str]] | None = None  # (client id, hostname) per targeted client
    skip: bool = False


_NOTE = web.RequestKey("rportd_audit_note", AuditNote)


def audit_note(request: web.Request) -> AuditNote:
    """The note of this request's audit entry (a throw-away note when it is not audited)."""
    note = request.get(_NOTE)
    if note is None:
        note = AuditNote()
        request[_NOTE] = note
    return note


def _rule(request: web.Request) -> AuditRule | None:
    if request.method not in MUTATING:
        return None
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return None
    return AUDITED_ROUTES.get(route_key(request.method, info.route.resource.canonical))


def _path_params(request: web.Request) -> list[str]:
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    names: list[str] = []
    for part in canonical.split("{")[1:]:
        names.append(part.split("}")[0].split(":")[0])
    return [request.match_info.get(name, "") for name in names]


def _parse_bool(text: str) -> bool:
    return text in ("1", "t", "T", "TRUE", "true", "True")


async def _request_json(request: web.Request) -> Any:
    if not request.body_exists or request.content_type.startswith("multipart/"):
        return None
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, RecursionError):
        return None


def _response_data(response: web.StreamResponse) -> Any:
    if not isinstance(response, web.Response) or not response.body:
        return None
    body = response.body
    if not isinstance(body, bytes | bytearray):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("data") if isinstance(value, dict) else None


def _pick(source: str, *, path: list[str], body: Any, data: Any, username: str) -> str:
    kind, _, arg = source.partition(":")
    value: Any = None
    if kind == "path":
        index = int(arg)
        value = path[index] if index < len(path) else ""
    elif kind == "body" and isinstance(body, dict):
        value = body.get(arg)
    elif kind == "data" and isinstance(data, dict):
        value = data.get(arg)
    elif kind == "user":
        value = username
    elif kind == "token" and isinstance(data, dict):
        value = f"[{username},{data.get('prefix', '')}]"
    return "" if value is None else str(value)


async def _entries(
    request: web.Request, response: web.StreamResponse, rule: AuditRule, note: AuditNote
) -> list[AuditEntry]:
    try:
        username = identity_of(request).username
    except KeyError:
        username = ""
    path = _path_params(request)
    wants_body = rule.request == "body" or "body:" in rule.affected_id + rule.client
    body = await _request_json(request) if wants_body else None
    wants_data = rule.response == "data" or rule.affected_id.startswith(("data:", "token"))
    data = _response_data(response) if wants_data else None

    affected = note.affected_id
    if affected is None:
        affected = _pick(rule.affected_id, path=path, body=body, data=data, username=username)

    stored_request: Any = None
    if note.request is not _UNSET:
        stored_request = note.request
    elif rule.request == "body":
        stored_request = body
        if rule.hidden and isinstance(body, dict):
            stored_request = {k: v for k, v in body.items() if k not in rule.hidden}
    elif rule.request == "query":
        stored_request = dict(request.query)
    elif rule.request == "force":
        stored_request = {"force": _parse_bool(request.query.get("force", ""))}
    stored_response: Any = None
    if note.response is not _UNSET:
        stored_response = note.response
    elif rule.response == "data":
        stored_response = data

    clients = note.clients
    if clients is None:
        client_id = note.client_id
        if client_id is None and rule.client:
            client_id = _pick(rule.client, path=path, body=body, data=data, username=username)
        clients = [(client_id, _hostname(request, client_id))] if client_id else [("", "")]

    ip = client_ip(request)
    request_text = as_json_text(stored_request)
    response_text = as_json_text(stored_response)
    return [
        AuditEntry(
            application=rule.application,
            action=rule.action,
            username=username,
            remote_ip=ip,
            affected_id=affected,
            client_id=cid,
            client_hostname=host,
            request=request_text,
            response=response_text,
        )
        for cid, host in clients
    ]


def _hostname(request: web.Request, client_id: str) -> str:
    client = server_of(request).clients.registry.get(client_id)
    return client.hostname if client is not None else ""


@web.middleware
async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record successful mutating calls that upstream audits."""
    rule = _rule(request)
    auditlog = server_of(request).auditlog
    if rule is None or auditlog is None or not auditlog.enabled:
        return await handler(request)
    note = audit_note(request)
    response = await handler(request)
    if 200 <= response.status < 300 and not note.skip:
        try:
            await auditlog.add_many(await _entries(request, response, rule, note))
        except Exception:
            log.exception("could not write the audit entry of %s %s", request.method, request.path)
    return response
