"""``/vault-admin`` and ``/vault``: the encrypted key/value store (api.md §4.10, §6)."""

from __future__ import annotations

import re

from aiohttp import web

from rportd.api.audit import audit_note
from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, ErrorItem, bad_request, not_found
from rportd.api.guards import admin_only, permission, writes_replicated
from rportd.api.query import parse_list_options
from rportd.api.responses import created_empty, envelope, expect_type, no_content, read_json
from rportd.gotypes import utcnow
from rportd.vault.service import INPUT_KEYS, LIST_SPEC, Vault, VaultError, not_found_message

PARAM = "vault_value_id"
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = 2**63


def _vault(request: web.Request) -> Vault:
    return server_of(request).vault


def _error(exc: VaultError) -> ApiError:
    return ApiError(exc.status, exc.titles[0], items=[ErrorItem(t, exc.detail) for t in exc.titles])


def _value_id(request: web.Request) -> int:
    """The id in the path, read like Go's ``strconv.Atoi`` (400 otherwise)."""
    text = request.match_info[PARAM]
    if not _GO_INT.fullmatch(text) or not -_INT64 <= int(text) < _INT64:
        raise bad_request(f"Non-numeric integer value provided: {text} for param {PARAM}")
    return int(text)


def _required_id(request: web.Request) -> int:
    value_id = _value_id(request)
    if value_id == 0:
        raise bad_request(f'missing "{PARAM}" route param')
    return value_id


async def _password(request: web.Request) -> str:
    body = await read_json(request, ("password",))
    password: str = expect_type(body, "password", str, "")
    return password


async def _input(request: web.Request) -> dict[str, str]:
    body = await read_json(request, INPUT_KEYS)
    return {key: expect_type(body, key, str, "") for key in INPUT_KEYS}


@permission("vault")
async def get_status(request: web.Request) -> web.Response:
    return envelope(_vault(request).status())


@writes_replicated
@permission("vault")
@admin_only
async def init(request: web.Request) -> web.Response:
    password = await _password(request)
    try:
        await _vault(request).init(password)
    except VaultError as exc:
        raise _error(exc) from None
    return created_empty()


@permission("vault")
@admin_only
async def unlock(request: web.Request) -> web.Response:
    """Unlock this node (not replicated: every node is unlocked on its own)."""
    password = await _password(request)
    try:
        _vault(request).unlock(password)
    except VaultError as exc:
        raise _error(exc) from None
    return created_empty()


@permission("vault")
@admin_only
async def lock(request: web.Request) -> web.Response:
    try:
        _vault(request).lock()
    except VaultError as exc:
        raise _error(exc) from None
    return no_content()


@permission("vault")
async def list_values(request: web.Request) -> web.Response:
    vault = _vault(request)
    try:
        vault.ensure_ready()
        options = parse_list_options(request.query, LIST_SPEC)
        return envelope(await vault.list(options))
    except VaultError as exc:
        raise _error(exc) from None


@permission("vault")
async def get_value(request: web.Request) -> web.Response:
    value_id = _required_id(request)
    try:
        value = await _vault(request).get(value_id, identity_of(request).groups)
    except VaultError as exc:
        raise _error(exc) from None
    if value is None:
        raise not_found(not_found_message(value_id))
    return envelope(value)


async def _store(request: web.Request, value_id: int) -> web.Response:
    identity = identity_of(request)
    value = await _input(request)
    try:
        stored_id = await _vault(request).save(
            value_id, value, identity.username, identity.groups, utcnow()
        )
    except VaultError as exc:
        raise _error(exc) from None
    note = audit_note(request)
    note.request = {**value, "value": ""}  # upstream's audit entry: never the secret
    note.affected_id = str(stored_id)
    note.client_id = value["client_id"]
    return envelope({"id": stored_id}, status=201 if value_id == 0 else 200)


@writes_replicated
@permission("vault")
async def create_value(request: web.Request) -> web.Response:
    return await _store(request, 0)


@writes_replicated
@permission("vault")
async def update_value(request: web.Request) -> web.Response:
    # Upstream creates a new value on ``PUT /vault/0`` (201); kept.
    return await _store(request, _value_id(request))


@writes_replicated
@permission("vault")
async def delete_value(request: web.Request) -> web.Response:
    value_id = _required_id(request)
    try:
        client_id = await _vault(request).delete(value_id, identity_of(request).groups)
    except VaultError as exc:
        raise _error(exc) from None
    audit_note(request).client_id = client_id
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/vault-admin", get_status)
    r.add_post("/api/v1/vault-admin/init", init)
    r.add_post("/api/v1/vault-admin/sesame", unlock)
    r.add_delete("/api/v1/vault-admin/sesame", lock)
    r.add_get("/api/v1/vault", list_values)
    r.add_post("/api/v1/vault", create_value)
    r.add_get(f"/api/v1/vault/{{{PARAM}}}", get_value)
    r.add_put(f"/api/v1/vault/{{{PARAM}}}", update_value)
    r.add_delete(f"/api/v1/vault/{{{PARAM}}}", delete_value)
