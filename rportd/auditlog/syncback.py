"""Audit entries a secondary wrote flow back to the primary (HA sync back)."""

from __future__ import annotations

from typing import Any

from rportd.auditlog.store import AuditLog


class AuditSyncSource:
    """Audit entries by identity key; the primary stores each one once."""

    kind = "auditlog"

    def __init__(self, auditlog: AuditLog) -> None:
        self.auditlog = auditlog

    async def load(self, keys: list[str]) -> list[dict[str, Any]]:
        records = []
        for key in keys:
            entry = await self.auditlog.find(key)
            if entry is not None:
                records.append(entry.document())
        return records

    async def store(self, records: list[dict[str, Any]]) -> int:
        return await self.auditlog.insert_documents(records)
