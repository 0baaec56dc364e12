"""``vault.sqlite.db``: encrypted values and the status row (storage.md §8), replicated.

The file exists only once the vault is initialised (or was copied from upstream):
it is opened at start when present and created on demand. Values never appear
here in clear: the replicated documents hold them encrypted, exactly as stored.

Data sets: ``vault`` (one document per value, keyed by id) and ``vault_status``
(one document, key ``status``: the status row with its encrypted check value).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from rportd.api.query import ListOptions, sql_order, sql_where
from rportd.store.changes import NULL_SINK, ChangeSink, Document, SecondDataset
from rportd.store.database import Database, Row, Transaction

FILENAME = "vault.sqlite.db"
SCHEMA = "vault"
STATUS_KEY = "status"
INITIALIZED = "setup-completed"
UNINITIALIZED = "uninitialized"

COLUMNS = (
    "id",
    "client_id",
    "required_group",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "key",
    "value",
    "type",
)
LIST_COLUMNS = ("id", "client_id", "created_by", "created_at", "key")
# API field -> SQL expression ("values" and "key" are SQL keywords).
SQL_COLUMNS = {name: f'"{name}"' for name in COLUMNS}

_INSERT = (
    f'INSERT INTO "values" ({", ".join(SQL_COLUMNS[c] for c in COLUMNS)}) '
    f"VALUES ({', '.join(':' + c for c in COLUMNS)})"
)
_INSERT_NEW = (
    f'INSERT INTO "values" ({", ".join(SQL_COLUMNS[c] for c in COLUMNS[1:])}) '
    f"VALUES ({', '.join(':' + c for c in COLUMNS[1:])})"
)
_UPDATE = (
    'UPDATE "values" SET "client_id" = :client_id, "required_group" = :required_group, '
    '"updated_at" = :updated_at, "updated_by" = :updated_by, "key" = :key, '
    '"value" = :value, "type" = :type WHERE "id" = :id'
)
# dec_check may hold bytes that are not UTF-8 (upstream writes a raw hash there): read as hex.
_STATUS_SELECT = (
    "SELECT id, db_status, enc_check, hex(dec_check) AS dec_check_hex, "
    "dec_check IS NULL AS dec_check_null FROM status ORDER BY id LIMIT 1"
)
_STATUS_INSERT = (
    "INSERT INTO status (id, db_status, enc_check, dec_check) "
    "VALUES (:id, :db_status, :enc_check, CAST(:dec_check AS TEXT))"
)


@dataclass(frozen=True)
class VaultStatus:
    """The status row: whether the vault is set up, and its password check value."""

    id: int
    db_status: str
    enc_check: str
    dec_check: bytes | None

    @property
    def initialized(self) -> bool:
        return self.db_status == INITIALIZED

    def to_document(self) -> Document:
        return {
            "id": self.id,
            "db_status": self.db_status,
            "enc_check": self.enc_check,
            "dec_check_hex": None if self.dec_check is None else self.dec_check.hex(),
        }

    @classmethod
    def from_document(cls, doc: Document) -> VaultStatus:
        hexed = doc.get("dec_check_hex")
        return cls(
            id=int(doc.get("id") or 1),
            db_status=str(doc.get("db_status") or ""),
            enc_check=str(doc.get("enc_check") or ""),
            dec_check=None if hexed is None else bytes.fromhex(str(hexed)),
        )

    @classmethod
    def from_row(cls, row: Row) -> VaultStatus:
        return cls(
            id=int(row["id"]),
            db_status=str(row["db_status"] or ""),
            enc_check=str(row["enc_check"] or ""),
            dec_check=None if row["dec_check_null"] else bytes.fromhex(row["dec_check_hex"]),
        )

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "db_status": self.db_status,
            "enc_check": self.enc_check,
            "dec_check": self.dec_check,
        }


class DuplicateKey(Exception):
    """Another value already has this key for this client (the UNIQUE constraint)."""


class VaultStore:
    """The vault file; the ``vault`` :class:`~rportd.store.changes.ReplicatedDataset`."""

    dataset = "vault"
    changes: ChangeSink = NULL_SINK

    def __init__(self, path: Path, open_db: Callable[[], Awaitable[Database]]) -> None:
        self.path = path
        self._open_db = open_db
        self.db: Database | None = None
        self.status: VaultStatus | None = None
        self.status_listeners: list[Callable[[VaultStatus | None], None]] = []
        self._opening = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return self.db is not None

    async def open_if_exists(self) -> None:
        """Open the file if it is there (upstream opens it at start only then)."""
        if await asyncio.to_thread(self.path.exists):
            await self.open()

    async def open(self) -> Database:
        """Open (creating and migrating if needed) the file and read its status row."""
        async with self._opening:
            if self.db is None:
                db = await self._open_db()
                row = await db.fetch_one(_STATUS_SELECT)
                self.status = VaultStatus.from_row(row) if row is not None else None
                self.db = db
            return self.db

    # --- reads ---------------------------------------------------------------------------

    async def list(self, options: ListOptions) -> list[Row]:
        """Values without their secret (``id, client_id, created_by, created_at, key``)."""
        if self.db is None:
            return []
        where, params = sql_where(options.filters, SQL_COLUMNS)
        order = sql_order(options.sorts, SQL_COLUMNS)
        cols = ", ".join(SQL_COLUMNS[c] for c in LIST_COLUMNS)
        return await self.db.fetch_all(f'SELECT {cols} FROM "values" {where} {order}', params)

    async def get(self, value_id: int) -> Row | None:
        if self.db is None:
            return None
        return await self.db.fetch_one('SELECT * FROM "values" WHERE "id" = :id', {"id": value_id})

    # --- writes --------------------------------------------------------------------------

    async def set_status(self, status: VaultStatus) -> None:
        """Write the status row (vault initialisation), creating the file if needed."""
        self.changes.ensure_writable("vault_status")
        db = await self.open()
        async with db.transaction() as tx:
            await self._put_status(tx, status)
            await self.changes.record(tx, "vault_status", STATUS_KEY, status.to_document())
        self._status_changed(status)

    async def save(
        self,
        value_id: int,
        row: dict[str, Any],
        guard: Callable[[Row | None, Row | None], None],
    ) -> int:
        """Insert (``value_id`` 0) or update a value; return its id.

        ``guard(existing, same_key)`` sees the row being updated (None when unknown or
        inserting) and the row already holding this key for this client, and raises to
        refuse the write; it must refuse an update of an unknown id.
        """
        self.changes.ensure_writable(self.dataset)
        db = await self.open()
        async with db.transaction() as tx:
            existing = None
            if value_id:
                existing = await tx.fetch_one(
                    'SELECT * FROM "values" WHERE "id" = :id', {"id": value_id}
                )
            same_key = await tx.fetch_one(
                'SELECT * FROM "values" WHERE "key" = :key AND "client_id" = :client_id',
                {"key": row["key"], "client_id": row["client_id"]},
            )
            guard(existing, same_key)
            try:
                if not value_id:
                    await tx.execute(_INSERT_NEW, row)
                    found = await tx.fetch_one("SELECT last_insert_rowid() AS id")
                    assert found is not None
                    value_id = int(found["id"])
                else:
                    await tx.execute(_UPDATE, {**row, "id": value_id})
            except Exception as exc:
                if _is_unique_violation(exc):
                    raise DuplicateKey() from None
                raise
            stored = await tx.fetch_one('SELECT * FROM "values" WHERE "id" = :id', {"id": value_id})
            assert stored is not None
            await self.changes.record(tx, self.dataset, str(value_id), _document(stored))
        return value_id

    async def delete(self, value_id: int, guard: Callable[[Row | None], None]) -> Row | None:
        """Delete a value and return it; ``guard(existing)`` raises to refuse (e.g. unknown id)."""
        self.changes.ensure_writable(self.dataset)
        db = await self.open()
        async with db.transaction() as tx:
            existing = await tx.fetch_one(
                'SELECT * FROM "values" WHERE "id" = :id', {"id": value_id}
            )
            guard(existing)
            await tx.execute('DELETE FROM "values" WHERE "id" = :id', {"id": value_id})
            await self.changes.record(tx, self.dataset, str(value_id), None)
        return existing

    # --- status row -----------------------------------------------------------------------

    async def _put_status(self, tx: Transaction, status: VaultStatus | None) -> None:
        await tx.execute("DELETE FROM status")
        if status is not None:
            await tx.execute(_STATUS_INSERT, status.row())

    def _status_changed(self, status: VaultStatus | None) -> None:
        self.status = status
        for listener in self.status_listeners:
            listener(status)

    async def snapshot_status(self) -> dict[str, Document]:
        if self.db is None:
            return {}
        row = await self.db.fetch_one(_STATUS_SELECT)
        return {STATUS_KEY: VaultStatus.from_row(row).to_document()} if row is not None else {}

    async def apply_status(self, doc: Document | None) -> None:
        """Write a replicated status row (``None``: none), without recording it."""
        if doc is None and self.db is None:
            return
        status = VaultStatus.from_document(doc) if doc is not None else None
        db = await self.open()
        async with db.transaction() as tx:
            await self._put_status(tx, status)
        self._status_changed(status)

    # --- ReplicatedDataset (values) ---------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        if self.db is None:
            return {}
        rows = await self.db.fetch_all('SELECT * FROM "values" ORDER BY "id"')
        return {str(r["id"]): _document(r) for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        if doc is None and self.db is None:
            return
        db = await self.open()
        async with db.transaction() as tx:
            await tx.execute('DELETE FROM "values" WHERE "id" = :id', {"id": int(key)})
            if doc is not None:
                await tx.execute(_INSERT, _row_from_document(key, doc))

    async def restore(self, docs: dict[str, Document]) -> None:
        if not docs and self.db is None:
            return
        db = await self.open()
        async with db.transaction() as tx:
            await tx.execute('DELETE FROM "values"')
            for key, doc in docs.items():
                await tx.execute(_INSERT, _row_from_document(key, doc))


class VaultStatusDataset(SecondDataset[VaultStore]):
    """The ``vault_status`` data set: the status row of :class:`VaultStore`."""

    dataset = "vault_status"

    async def snapshot(self) -> dict[str, Document]:
        return await self.store.snapshot_status()

    async def apply(self, key: str, doc: Document | None) -> None:
        await self.store.apply_status(doc)

    async def restore(self, docs: dict[str, Document]) -> None:
        await self.store.apply_status(docs.get(STATUS_KEY))


def _document(row: Row) -> Document:
    """The replicated document: every column as stored (the value stays encrypted)."""
    return {name: row.get(name) for name in COLUMNS}


def _row_from_document(key: str, doc: Document) -> dict[str, Any]:
    return {**{name: doc.get(name) for name in COLUMNS}, "id": int(key)}


def _is_unique_violation(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError | sqlite3.IntegrityError) and "UNIQUE" in str(exc)
