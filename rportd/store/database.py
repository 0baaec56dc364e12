"""One SQLite file, opened with SQLAlchemy's asyncio engine over aiosqlite."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from rportd.store.migrations import migrate

log = logging.getLogger(__name__)

Row = dict[str, Any]
Params = Mapping[str, Any] | None


class Transaction:
    """Statements run inside one SQLite transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = None) -> int:
        result = await self._conn.execute(text(sql), dict(params or {}))
        return int(result.rowcount)

    async def execute_many(self, sql: str, rows: Iterable[Mapping[str, Any]]) -> None:
        batch = [dict(r) for r in rows]
        if batch:
            await self._conn.execute(text(sql), batch)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        result = await self._conn.execute(text(sql), dict(params or {}))
        return [dict(r) for r in result.mappings()]

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class Database:
    """A SQLite database file migrated to ``schema`` (``None``: used as found)."""

    def __init__(self, path: Path | str, schema: str | None, *, wal: bool = True) -> None:
        self.path = Path(path)
        self.schema = schema
        self.wal = wal
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"database {self.path} is not open")
        return self._engine

    async def open(self) -> None:
        """Create or open the file, set it to 0600 and apply migrations."""
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{self.path}",
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 5},
        )
        wal = self.wal

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide where transactions begin.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        self._engine = engine
        try:
            async with engine.connect():
                pass
            if str(self.path) != ":memory:":
                await asyncio.to_thread(os.chmod, self.path, 0o600)
            if self.schema:
                await migrate(engine, self.schema, self.path.name)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction, committed on success and rolled back on error."""
        async with self.engine.begin() as conn:
            yield Transaction(conn)

    async def execute(self, sql: str, params: Params = None) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        async with self.engine.connect() as conn:
            result = await conn.execute(text(sql), dict(params or {}))
            rows = [dict(r) for r in result.mappings()]
            await conn.rollback()
            return rows

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None
