"""Stored tunnels: saved tunnel templates per client (``clients.db`` ``stored_tunnels``).

A replicated dataset (``stored_tunnels``): documents keyed by tunnel id, each
write recorded through the change sink in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rportd.api.query import ListOptions, sql_limit, sql_order, sql_where
from rportd.gotypes import format_db_time, format_time, parse_time, utcnow
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database, Row, Transaction

COLUMNS = (
    "id",
    "client_id",
    "created_at",
    "name",
    "scheme",
    "remote_ip",
    "remote_port",
    "public_port",
    "acl",
    "further_options",
)
FIELD_COLUMNS = {
    "created_at": "created_at",
    "name": "name",
    "scheme": "scheme",
    "remote_ip": "remote_ip",
    "remote_port": "remote_port",
}
_INSERT = (
    f"INSERT OR REPLACE INTO stored_tunnels ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in COLUMNS)})"
)
_UPDATE = (
    "UPDATE stored_tunnels SET name = :name, scheme = :scheme, remote_ip = :remote_ip, "
    "remote_port = :remote_port, public_port = :public_port, acl = :acl, "
    "further_options = :further_options WHERE client_id = :client_id AND id = :id"
)


class StoredTunnelInputError(ValueError):
    """The request body is not a stored tunnel; the text says which field is wrong."""


_STRING_FIELDS = ("scheme", "remote_ip", "acl")
_INT_FIELDS = ("remote_port", "public_port")
INPUT_KEYS = frozenset({*COLUMNS} - {"client_id"})


def parse_input(body: dict[str, Any]) -> dict[str, Any]:
    """The editable columns of a POST/PUT body (unknown keys were refused already)."""
    values: dict[str, Any] = {}
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise StoredTunnelInputError("json: field 'name' must be a string")
    values["name"] = name or ""
    for key in _STRING_FIELDS:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise StoredTunnelInputError(f"json: field {key!r} must be a string or null")
        values[key] = value
    for key in _INT_FIELDS:
        value = body.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or int(value) != value
            or not -(2**63) <= value < 2**63
        ):
            raise StoredTunnelInputError(f"json: field {key!r} must be an integer or null")
        values[key] = None if value is None else int(value)
    if "further_options" in body and body["further_options"] is not None:
        values["further_options"] = json.dumps(body["further_options"], separators=(",", ":"))
    else:
        values["further_options"] = None
    return values


def _to_api(row: Row) -> dict[str, Any]:
    created = row.get("created_at")
    try:
        created_at = parse_time(str(created)) if created else None
    except ValueError:
        created_at = None
    further = row.get("further_options")
    try:
        options = json.loads(further) if further else None
    except ValueError:
        options = None
    return {
        "id": row["id"],
        "created_at": format_time(created_at) or "0001-01-01T00:00:00Z",
        "name": row.get("name") or "",
        "scheme": row.get("scheme"),
        "remote_ip": row.get("remote_ip"),
        "remote_port": row.get("remote_port"),
        "public_port": row.get("public_port"),
        "acl": row.get("acl"),
        "further_options": options,
    }


def _document(row: Row) -> Document:
    return {column: row.get(column) for column in COLUMNS}


class StoredTunnelStore:
    """Saved tunnels of every client."""

    dataset = "stored_tunnels"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.changes: ChangeSink = NULL_SINK

    async def list(self, client_id: str, options: ListOptions) -> tuple[list[dict[str, Any]], int]:
        """One page of a client's stored tunnels and the number matching the filters."""
        where, params = sql_where(options.filters, FIELD_COLUMNS, frozenset({"created_at"}))
        scope = "client_id = :client_id"
        where = f"{where} AND {scope}" if where else f"WHERE {scope}"
        params["client_id"] = client_id
        order = sql_order(options.sorts, FIELD_COLUMNS)
        order = f"{order}, rowid" if order else "ORDER BY rowid"
        limit, limit_params = sql_limit(options.pagination)
        rows = await self.db.fetch_all(
            f"SELECT * FROM stored_tunnels {where} {order} {limit}", {**params, **limit_params}
        )
        counted = await self.db.fetch_one(
            f"SELECT COUNT(*) AS n FROM stored_tunnels {where}", params
        )
        return [_to_api(r) for r in rows], int(counted["n"]) if counted else 0

    async def create(self, client_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """Store a new template; returns it as the API shows it."""
        self.changes.ensure_writable(self.dataset)
        row: Row = {
            **values,
            "id": str(uuid.uuid4()),
            "client_id": client_id,
            "created_at": format_db_time(utcnow()),
        }
        async with self.db.transaction() as tx:
            await tx.execute(_INSERT, row)
            await self.changes.record(tx, self.dataset, row["id"], _document(row))
        return _to_api(row)

    async def update(
        self, client_id: str, tunnel_id: str, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Replace a template's fields; ``None`` if the client has no such template."""
        self.changes.ensure_writable(self.dataset)
        async with self.db.transaction() as tx:
            changed = await tx.execute(_UPDATE, {**values, "client_id": client_id, "id": tunnel_id})
            if not changed:
                return None
            row = await self._row(tx, client_id, tunnel_id)
            assert row is not None
            await self.changes.record(tx, self.dataset, tunnel_id, _document(row))
        return _to_api(row)

    async def delete(self, client_id: str, tunnel_id: str) -> bool:
        """Remove a template; whether it existed."""
        self.changes.ensure_writable(self.dataset)
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM stored_tunnels WHERE client_id = :client_id AND id = :id",
                {"client_id": client_id, "id": tunnel_id},
            )
            if deleted:
                await self.changes.record(tx, self.dataset, tunnel_id, None)
        return deleted > 0

    async def delete_for_client(self, client_id: str) -> None:
        """The client was deleted: remove its templates (the primary decides, on a secondary)."""
        if not self.changes.writable:
            return
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(
                "SELECT id FROM stored_tunnels WHERE client_id = :c", {"c": client_id}
            )
            await tx.execute("DELETE FROM stored_tunnels WHERE client_id = :c", {"c": client_id})
            for row in rows:
                await self.changes.record(tx, self.dataset, str(row["id"]), None)

    @staticmethod
    async def _row(tx: Transaction, client_id: str, tunnel_id: str) -> Row | None:
        return await tx.fetch_one(
            "SELECT * FROM stored_tunnels WHERE client_id = :client_id AND id = :id",
            {"client_id": client_id, "id": tunnel_id},
        )

    # --- ReplicatedDataset ---------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        rows = await self.db.fetch_all("SELECT * FROM stored_tunnels ORDER BY rowid")
        return {str(r["id"]): _document(r) for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        async with self.db.transaction() as tx:
            if doc is None:
                await tx.execute("DELETE FROM stored_tunnels WHERE id = :id", {"id": key})
            else:
                await tx.execute(_INSERT, {**_document(doc), "id": key})

    async def restore(self, docs: dict[str, Document]) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM stored_tunnels")
            await tx.execute_many(_INSERT, [{**_document(d), "id": k} for k, d in docs.items()])
