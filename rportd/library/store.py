"""Saved scripts and commands in ``library.db`` (storage.md §7), replicated.

One :class:`LibraryStore` per table: datasets ``library_scripts`` and
``library_commands``, documents = the full row as JSON keyed by id. Every
write records its change in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from rportd.api.query import (
    ListOptions,
    ListSpec,
    filter_items,
    paginate,
    sql_order,
    sql_where,
)
from rportd.gotypes import format_db_time, format_time, parse_time, utcnow
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database, Transaction

DEFAULT_TIMEOUT_SEC = 60


class LibraryError(Exception):
    """A refused library write; ``status``, ``titles`` as upstream answers them."""

    def __init__(self, status: int, *titles: str) -> None:
        super().__init__(titles[0])
        self.status = status
        self.titles = titles


@dataclass(frozen=True)
class LibraryKind:
    """What differs between saved scripts and saved commands."""

    table: str
    dataset: str
    noun: str  # "script" / "command"
    body_column: str  # "script" / "cmd"
    # API keys in upstream's JSON order.
    keys: tuple[str, ...]
    input_keys: tuple[str, ...]

    @property
    def list_spec(self) -> ListSpec:
        sortable = frozenset(self.keys) - {"timeout_sec"}
        return ListSpec(
            sort_fields=sortable,
            filter_fields=sortable,
            fields={self.table: frozenset(self.keys)},
            page_default=20,
            page_max=100,
        )

    @property
    def detail_spec(self) -> ListSpec:
        return ListSpec(fields={self.table: frozenset(self.keys)})


SCRIPTS = LibraryKind(
    table="scripts",
    dataset="library_scripts",
    noun="script",
    body_column="script",
    keys=(
        "id",
        "name",
        "created_by",
        "created_at",
        "updated_by",
        "updated_at",
        "interpreter",
        "is_sudo",
        "cwd",
        "script",
        "tags",
        "timeout_sec",
    ),
    input_keys=("name", "interpreter", "is_sudo", "cwd", "script", "tags", "timeout_sec"),
)
COMMANDS = LibraryKind(
    table="commands",
    dataset="library_commands",
    noun="command",
    body_column="cmd",
    keys=(
        "id",
        "name",
        "created_by",
        "created_at",
        "updated_by",
        "updated_at",
        "cmd",
        "tags",
        "timeout_sec",
    ),
    input_keys=("name", "cmd", "tags", "timeout_sec"),
)

# Go's ``omitempty`` drops these when empty; the others only when not selected.
_OMIT_EMPTY = frozenset({"id", "name", "created_by", "updated_by", "script", "cmd"})
_DATE_KEYS = frozenset({"created_at", "updated_at"})
_SQL_COLUMNS = {"is_sudo": "(CASE WHEN is_sudo THEN 'true' ELSE 'false' END)"}


def _tags_from_db(value: Any) -> list[str] | None:
    if not isinstance(value, str):
        return None
    try:
        loaded = json.loads(value)
    except ValueError:
        return None
    return [str(t) for t in loaded] if isinstance(loaded, list) else None


def _time_text(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return format_time(parse_time(value))
    except ValueError:
        return value


class LibraryStore:
    """One library table; a :class:`~rportd.store.changes.ReplicatedDataset`."""

    changes: ChangeSink = NULL_SINK

    def __init__(self, db: Database, kind: LibraryKind) -> None:
        self.db = db
        self.kind = kind

    @property
    def dataset(self) -> str:
        return self.kind.dataset

    # --- rows and documents ------------------------------------------------------------

    def _item(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row as the API object (only the selected columns, Go's omitempty rules)."""
        out: dict[str, Any] = {}
        for key in self.kind.keys:
            if key not in row:
                continue
            value = row[key]
            if key in _DATE_KEYS:
                value = _time_text(value)
                if value is None:
                    continue
            elif key == "tags":
                value = _tags_from_db(value)
            elif key == "is_sudo":
                if value is None:
                    continue
                value = bool(value)
            elif key in _OMIT_EMPTY:
                if not value:
                    continue
            elif value is None:
                continue
            out[key] = value
        return out

    def _document(self, row: dict[str, Any]) -> Document:
        """The replicated document: every column as stored."""
        return {key: row.get(key) for key in self.kind.keys}

    def _row_from_document(self, doc: Document) -> dict[str, Any]:
        row = {key: doc.get(key) for key in self.kind.keys}
        sudo = row.get("is_sudo")
        if isinstance(sudo, bool):
            row["is_sudo"] = int(sudo)
        return row

    # --- reads -------------------------------------------------------------------------

    async def page(self, options: ListOptions) -> tuple[list[dict[str, Any]], int]:
        """A page of items and the total; ``tags`` filters apply in memory as upstream."""
        columns = {k: _SQL_COLUMNS.get(k, k) for k in self.kind.keys}
        sql_filters = [f for f in options.filters if "tags" not in f.fields]
        tag_filters = [f for f in options.filters if "tags" in f.fields]
        where, params = sql_where(sql_filters, columns, _DATE_KEYS)
        order = sql_order(options.sorts, columns)
        selected = options.fields_for(self.kind.table)
        names = [k for k in self.kind.keys if selected is None or k in selected]
        wanted = set(names) | ({"tags"} if tag_filters else set())
        cols = ", ".join(k for k in self.kind.keys if k in wanted) or "id"
        rows = await self.db.fetch_all(
            f"SELECT {cols} FROM {self.kind.table} {where} {order}", params
        )
        if tag_filters:

            def value(row: dict[str, Any], name: str) -> object:
                if name == "tags":
                    return _tags_from_db(row.get("tags")) or []
                return row.get(name)

            rows = filter_items(rows, tag_filters, value)
        page = paginate(rows, options.pagination)
        return [self._item({k: r[k] for k in names if k in r}) for r in page], len(rows)

    async def get(self, item_id: str, fields: list[str] | None = None) -> dict[str, Any] | None:
        cols = ", ".join(k for k in self.kind.keys if fields is None or k in fields) or "id"
        row = await self.db.fetch_one(
            f"SELECT {cols} FROM {self.kind.table} WHERE id = :id", {"id": item_id}
        )
        return self._item(row) if row is not None else None

    # --- writes --------------------------------------------------------------------------

    def validate(self, body: dict[str, Any]) -> None:
        missing = []
        if not body.get("name"):
            missing.append("name is required")
        if not body.get(self.kind.body_column):
            missing.append(f"{self.kind.body_column} is required")
        if missing:
            raise LibraryError(400, *missing)

    async def _check_name(self, tx: Transaction, name: str, own_id: str | None) -> None:
        row = await tx.fetch_one(
            f"SELECT id FROM {self.kind.table} WHERE name = :name", {"name": name}
        )
        if row is not None and row["id"] != own_id:
            raise LibraryError(409, f"another {self.kind.noun} with the same name '{name}' exists")

    def _values(self, body: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": body.get("name") or "",
            "tags": json.dumps(body.get("tags"), ensure_ascii=False),
            "timeout_sec": body.get("timeout_sec") or DEFAULT_TIMEOUT_SEC,
        }
        if self.kind is SCRIPTS:
            values.update(
                interpreter=body.get("interpreter") or "",
                is_sudo=int(bool(body.get("is_sudo"))),
                cwd=body.get("cwd") or "",
                script=body.get("script") or "",
            )
        else:
            values["cmd"] = body.get("cmd") or ""
        return values

    async def create(self, body: dict[str, Any], username: str) -> dict[str, Any]:
        """Save a new item (``body`` = checked input keys); 400/409 as upstream."""
        self.validate(body)
        now = format_db_time(utcnow())
        row = {
            "id": str(uuid.uuid4()),
            "created_by": username,
            "created_at": now,
            "updated_by": username,
            "updated_at": now,
            **self._values(body),
        }
        async with self.db.transaction() as tx:
            await self._check_name(tx, row["name"], None)
            await self._insert(tx, row)
            await self.changes.record(tx, self.dataset, row["id"], self._document(row))
        return self._item(row)

    async def update(self, item_id: str, body: dict[str, Any], username: str) -> dict[str, Any]:
        self.validate(body)
        async with self.db.transaction() as tx:
            existing = await tx.fetch_one(
                f"SELECT * FROM {self.kind.table} WHERE id = :id", {"id": item_id}
            )
            if existing is None:
                raise LibraryError(404, "cannot find entry by the provided ID")
            await self._check_name(tx, str(body.get("name") or ""), item_id)
            row = {
                **{k: existing.get(k) for k in self.kind.keys},
                **self._values(body),
                "updated_by": username,
                "updated_at": format_db_time(utcnow()),
            }
            await self._replace(tx, row)
            await self.changes.record(tx, self.dataset, item_id, self._document(row))
        return self._item(row)

    async def delete(self, item_id: str) -> None:
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                f"DELETE FROM {self.kind.table} WHERE id = :id", {"id": item_id}
            )
            if not deleted:
                raise LibraryError(404, "cannot find this entry by the provided id")
            await self.changes.record(tx, self.dataset, item_id, None)

    async def _insert(self, tx: Transaction, row: dict[str, Any]) -> None:
        cols = ", ".join(self.kind.keys)
        params = ", ".join(f":{k}" for k in self.kind.keys)
        await tx.execute(f"INSERT INTO {self.kind.table} ({cols}) VALUES ({params})", row)

    async def _replace(self, tx: Transaction, row: dict[str, Any]) -> None:
        cols = ", ".join(self.kind.keys)
        params = ", ".join(f":{k}" for k in self.kind.keys)
        await tx.execute(f"REPLACE INTO {self.kind.table} ({cols}) VALUES ({params})", row)

    # --- ReplicatedDataset ------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        rows = await self.db.fetch_all(f"SELECT * FROM {self.kind.table} ORDER BY id")
        return {str(r["id"]): self._document(r) for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM {self.kind.table} WHERE id = :id", {"id": key})
            if doc is not None:
                await self._insert(tx, {**self._row_from_document(doc), "id": key})

    async def restore(self, docs: dict[str, Document]) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM {self.kind.table}")
            for key, doc in docs.items():
                await self._insert(tx, {**self._row_from_document(doc), "id": key})


class Library:
    """Saved scripts and saved commands (both tables of ``library.db``)."""

    def __init__(self, db: Database) -> None:
        self.scripts = LibraryStore(db, SCRIPTS)
        self.commands = LibraryStore(db, COMMANDS)
