"""The vault's rules: initialise, unlock/lock, and values read and written through the key.

The key (SHA-256 of the vault password) lives only in this process's memory: every
node of a cluster is unlocked separately, as upstream. Errors carry upstream's status
codes and texts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rportd.api.query import ListOptions, ListSpec
from rportd.gotypes import ZERO_TIME, format_time, parse_time
from rportd.store.database import Row
from rportd.vault.crypto import (
    DecryptionFailed,
    decrypt,
    encrypt,
    new_check_pair,
    password_problem,
    vault_key,
)
from rportd.vault.store import (
    INITIALIZED,
    LIST_COLUMNS,
    UNINITIALIZED,
    DuplicateKey,
    VaultStatus,
    VaultStore,
)

log = logging.getLogger(__name__)

LOCKED = "locked"
UNLOCKED = "unlocked"
VALUE_TYPES = frozenset({"text", "secret", "markdown", "string"})
INPUT_KEYS = ("client_id", "required_group", "key", "value", "type")

#: ``GET /vault``: sort and filter (``eq`` only) on these; no pagination, no fields.
LIST_SPEC = ListSpec(sort_fields=frozenset(LIST_COLUMNS), filter_fields=frozenset(LIST_COLUMNS))


class VaultError(Exception):
    """A refused vault call: HTTP ``status`` and one title per problem (upstream's texts)."""

    def __init__(self, status: int, *titles: str, detail: str = "") -> None:
        super().__init__(titles[0])
        self.status = status
        self.titles = titles
        self.detail = detail


def not_found_message(value_id: int) -> str:
    return f"Cannot find a vault value by the provided id: {value_id}"


def _api_time(value: Any) -> str:
    """A stored date as Go's JSON time (the zero time when unreadable, as upstream)."""
    try:
        parsed = parse_time(str(value)) if value else None
    except ValueError:
        parsed = None
    return format_time(parsed) or ZERO_TIME


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def list_item(row: Row) -> dict[str, Any]:
    """A value as ``GET /vault`` lists it (no secret)."""
    return {
        "id": int(row["id"]),
        "client_id": _text(row["client_id"]),
        "created_by": _text(row["created_by"]),
        "created_at": _api_time(row["created_at"]),
        "key": _text(row["key"]),
    }


def stored_time(now: datetime) -> str:
    """RFC 3339 in seconds, the way upstream writes ``created_at``/``updated_at``."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Vault:
    """One node's vault: the file's content plus this node's lock state."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store
        self._key: bytes | None = None
        self._init_lock = asyncio.Lock()
        store.status_listeners.append(self._status_replaced)

    @property
    def locked(self) -> bool:
        return self._key is None

    # --- administration ------------------------------------------------------------------

    def status(self) -> dict[str, str]:
        """``{"init", "status"}`` (``status`` is empty until the vault is initialised)."""
        current = self.store.status
        init = current.db_status if current is not None and current.db_status else UNINITIALIZED
        if init == UNINITIALIZED:
            return {"init": init, "status": ""}
        return {"init": init, "status": LOCKED if self.locked else UNLOCKED}

    async def init(self, password: str) -> None:
        """Set the vault up with ``password`` and leave it unlocked."""
        problem = password_problem(password)
        if problem:
            raise VaultError(400, problem)
        async with self._init_lock:
            current = self.store.status
            if current is not None and current.initialized:
                raise VaultError(409, "vault is already initialized")
            key = vault_key(password)
            enc_check, dec_check = new_check_pair(key)
            status_id = current.id if current is not None else 1
            await self.store.set_status(VaultStatus(status_id, INITIALIZED, enc_check, dec_check))
            self._key = key
        log.info("initialized vault")
        log.info("unlocked vault")

    def _require_initialized_status(self) -> VaultStatus:
        if not self.store.is_open:
            raise VaultError(409, "vault is not initialized yet")
        current = self.store.status
        if current is None or current.db_status in ("", UNINITIALIZED):
            raise VaultError(409, "vault is not yet initialized")
        return current

    def unlock(self, password: str) -> None:
        """Keep the key of ``password`` in memory if it opens this vault."""
        if not self.locked:
            raise VaultError(409, "vault is already unlocked")
        current = self._require_initialized_status()
        if not password:
            raise VaultError(401, "wrong password provided")
        if not current.enc_check:
            raise VaultError(500, "password control value from db is empty")
        key = vault_key(password)
        try:
            decrypt(key, current.enc_check)
        except DecryptionFailed:
            raise VaultError(401, "wrong password provided") from None
        self._key = key
        log.info("unlocked vault")

    def lock(self) -> None:
        """Forget the key."""
        if self.locked:
            raise VaultError(409, "vault is already locked")
        self._require_initialized_status()
        self._key = None
        log.info("locked vault")

    def _status_replaced(self, status: VaultStatus | None) -> None:
        """A replicated status row arrived: lock if our key no longer opens it."""
        if self._key is None:
            return
        opens = False
        if status is not None and status.initialized and status.enc_check:
            try:
                decrypt(self._key, status.enc_check)
                opens = True
            except DecryptionFailed:
                pass
        if not opens:
            self._key = None
            log.warning("locked vault: its status was replaced and the key no longer opens it")

    # --- values -----------------------------------------------------------------------------

    def _ready_key(self) -> bytes:
        key = self._key
        if key is None:
            raise VaultError(409, "vault is locked")
        current = self.store.status
        if current is None or not current.initialized:
            raise VaultError(409, "vault is not initialized")
        return key

    def ensure_ready(self) -> None:
        """409 unless the vault is initialised and unlocked."""
        self._ready_key()

    async def list(self, options: ListOptions) -> list[dict[str, Any]]:
        self._ready_key()
        return [list_item(row) for row in await self.store.list(options)]

    async def get(self, value_id: int, groups: Sequence[str]) -> dict[str, Any] | None:
        """The value in clear (None: unknown id); 403 without its required group."""
        key = self._ready_key()
        row = await self.store.get(value_id)
        if row is None:
            return None
        _check_group(row, groups)
        try:
            clear = decrypt(key, _text(row["value"]))
        except DecryptionFailed as exc:
            raise VaultError(
                500,
                str(exc),
                detail="the stored value was not encrypted with this vault's password",
            ) from None
        return {
            "client_id": _text(row["client_id"]),
            "required_group": _text(row["required_group"]),
            "key": _text(row["key"]),
            "value": clear.decode(errors="replace"),
            "type": _text(row["type"]),
            "id": int(row["id"]),
            "created_at": _api_time(row["created_at"]),
            "updated_at": _api_time(row["updated_at"]),
            "created_by": _text(row["created_by"]),
            "updated_by": row["updated_by"],
        }

    async def save(
        self,
        value_id: int,
        value: dict[str, str],
        username: str,
        groups: Sequence[str],
        now: datetime,
    ) -> int:
        """Create (``value_id`` 0) or update a value; return its id."""
        key = self._ready_key()
        problems = validate(value)
        if problems:
            raise VaultError(400, *problems)
        duplicate = f"another key '{value['key']}' exists for this client '{value['client_id']}'"

        def guard(existing: Row | None, same_key: Row | None) -> None:
            if value_id:
                if existing is None:
                    raise VaultError(404, "cannot find entry by the provided existingID")
                _check_group(existing, groups)
            if same_key is not None and (not value_id or int(same_key["id"]) != value_id):
                raise VaultError(409, duplicate)

        stamp = stored_time(now)
        row = {
            "client_id": value["client_id"],
            "required_group": value["required_group"],
            "created_at": stamp,
            "created_by": username,
            "updated_at": stamp,
            "updated_by": username,
            "key": value["key"],
            "value": encrypt(key, value["value"].encode()),
            "type": value["type"],
        }
        try:
            return await self.store.save(value_id, row, guard)
        except DuplicateKey:
            raise VaultError(409, duplicate) from None

    async def delete(self, value_id: int, groups: Sequence[str]) -> str:
        """Delete a value; return the client id it belonged to."""
        self._ready_key()

        def guard(existing: Row | None) -> None:
            if existing is None:
                raise VaultError(404, not_found_message(value_id))
            _check_group(existing, groups)

        deleted = await self.store.delete(value_id, guard)
        return _text(deleted["client_id"]) if deleted is not None else ""


def validate(value: dict[str, str]) -> list[str]:
    """Upstream's input checks, every problem at once."""
    problems = []
    if not value["key"]:
        problems.append("key is required")
    if not value["value"]:
        problems.append("value is required")
    if not value["type"]:
        problems.append("value type is required")
    elif value["type"] not in VALUE_TYPES:
        problems.append(f"unknown or invalid value value type {value['type']}")
    return problems


def _check_group(row: Row, groups: Sequence[str]) -> None:
    required = _text(row["required_group"])
    if required and required not in groups:
        raise VaultError(403, "your group doesn't allow access to this value")
