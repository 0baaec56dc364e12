"""Client ACLs (``allowed_user_groups``): which user groups may use a client.

Upstream keeps the ACL inside the client record. Here it is also a
replicated data set (``client_acl``), kept in its own table of ``clients.db``,
so that a secondary knows a client's ACL even before that client ever
connected to it; the client record still carries it, as upstream's does.
"""

from __future__ import annotations

import json

from rportd.clients.registry import ClientRegistry
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database

_DDL = (
    "CREATE TABLE IF NOT EXISTS rportd_client_acl "
    "(client_id TEXT PRIMARY KEY NOT NULL, allowed_user_groups TEXT) WITHOUT ROWID"
)
_UPSERT = (
    "INSERT OR REPLACE INTO rportd_client_acl (client_id, allowed_user_groups) "
    "VALUES (:id, :groups)"
)


class ClientAclStore:
    """The ACL of every client by id."""

    dataset = "client_acl"
    changes: ChangeSink = NULL_SINK

    def __init__(self, db: Database, registry: ClientRegistry) -> None:
        self.db = db
        self.registry = registry
        self._acl: dict[str, list[str] | None] = {}

    async def load(self) -> None:
        """Read the table; take ACLs found only in client records (upstream data)."""
        await self.db.execute(_DDL)
        rows = await self.db.fetch_all("SELECT * FROM rportd_client_acl")
        self._acl = {str(r["client_id"]): _groups(r["allowed_user_groups"]) for r in rows}
        imported = {
            c.id: c.allowed_user_groups
            for c in self.registry.all()
            if c.id not in self._acl and c.allowed_user_groups
        }
        if imported:
            async with self.db.transaction() as tx:
                await tx.execute_many(
                    _UPSERT, [{"id": k, "groups": json.dumps(v)} for k, v in imported.items()]
                )
            self._acl.update(imported)
        for client_id, groups in self._acl.items():
            self._apply_to_client(client_id, groups)
        self.registry.acl_lookup = self._acl.get

    def _apply_to_client(self, client_id: str, groups: list[str] | None) -> None:
        client = self.registry.get(client_id)
        if client is not None and client.allowed_user_groups != groups:
            client.allowed_user_groups = groups
            self.registry.save(client)

    async def set(self, client_id: str, groups: list[str] | None) -> None:
        """Set a client's ACL (``None``: none) on this primary."""
        self.changes.ensure_writable(self.dataset)
        async with self.db.transaction() as tx:
            await tx.execute(_UPSERT, {"id": client_id, "groups": json.dumps(groups)})
            await self.changes.record(tx, self.dataset, client_id, {"allowed_user_groups": groups})
        self._acl[client_id] = groups
        self._apply_to_client(client_id, groups)

    async def forget(self, client_id: str) -> None:
        """The client was deleted: drop its ACL too (the primary decides, on a secondary)."""
        if client_id not in self._acl or not self.changes.writable:
            return
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM rportd_client_acl WHERE client_id = :id", {"id": client_id}
            )
            await self.changes.record(tx, self.dataset, client_id, None)
        self._acl.pop(client_id, None)

    # ReplicatedDataset
    async def snapshot(self) -> dict[str, Document]:
        return {k: {"allowed_user_groups": v} for k, v in self._acl.items()}

    async def apply(self, key: str, doc: Document | None) -> None:
        if doc is None:
            await self.db.execute(
                "DELETE FROM rportd_client_acl WHERE client_id = :id", {"id": key}
            )
            self._acl.pop(key, None)
            self._apply_to_client(key, None)
            return
        groups = _groups(json.dumps(doc.get("allowed_user_groups")))
        await self.db.execute(_UPSERT, {"id": key, "groups": json.dumps(groups)})
        self._acl[key] = groups
        self._apply_to_client(key, groups)

    async def restore(self, docs: dict[str, Document]) -> None:
        for key in set(self._acl) - set(docs):
            await self.apply(key, None)
        for key, doc in docs.items():
            await self.apply(key, doc)


def _groups(raw: object) -> list[str] | None:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return [str(g) for g in value] if isinstance(value, list) else None
