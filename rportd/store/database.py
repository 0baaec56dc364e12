"""SQL databases through SQLAlchemy's asyncio engine: the base, and one SQLite file."""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from rportd.store.migrations import migrate

log = logging.getLogger(__name__)

# SQLite errors that mean the file cannot be written now (not a bad statement).
UNWRITABLE_SIGNS = ("readonly", "disk", "locked", "unable to open", "I/O")

Row = dict[str, Any]
Params = Mapping[str, Any] | None


class Transaction:
    """Statements run inside one database transaction."""

    def __init__(self, conn: AsyncConnection, database: SqlDatabase) -> None:
        self._conn = conn
        self.database = database
        self.context: dict[str, object] = {}
        self._on_end: list[Callable[[bool], None]] = []

    def on_end(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(committed)`` once the transaction has ended."""
        self._on_end.append(callback)

    def _ended(self, committed: bool) -> None:
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(committed)

    async def execute(self, sql: str, params: Params = None) -> int:
        result = await self._conn.execute(text(sql), dict(params or {}))
        return int(result.rowcount)

    async def execute_many(self, sql: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Run ``sql`` once per row in one driver call; the rows it changed in total."""
        batch = [dict(r) for r in rows]
        if not batch:
            return 0
        result = await self._conn.execute(text(sql), batch)
        return int(result.rowcount)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        result = await self._conn.execute(text(sql), dict(params or {}))
        return [dict(r) for r in result.mappings()]

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class SqlDatabase(abc.ABC):
    """A database reached through an async SQLAlchemy engine: transactions and reads."""

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        # Called with the duration of every committed write transaction (metrics).
        self.write_observer: Callable[[float], None] | None = None
        # Why the last write failed to commit, if it did (``None`` after a good one).
        self.write_error: str | None = None

    @property
    def label(self) -> str:
        """How messages name this database."""
        return "database"

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{self.label} is not open")
        return self._engine

    @property
    def shared(self) -> bool:
        """True when every HA node reaches the same data (the database replicates itself)."""
        return False

    def quote(self, name: str) -> str:
        """A table or column name (``schema.table`` too) quoted for this database's SQL."""
        preparer = self.engine.dialect.identifier_preparer
        return ".".join(preparer.quote_identifier(part) for part in name.split("."))

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the engine and check that the database answers."""

    async def close(self) -> None:
        for engine in (self._reader, self._engine):
            if engine is not None:
                await engine.dispose()
        self._engine = self._reader = None

    @asynccontextmanager
    async def _connection(self, write: bool) -> AsyncIterator[AsyncConnection]:
        """A connection: in a transaction committed at the end (``write``), else read-only."""
        if write:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with (self._reader or self.engine).connect() as conn:
            yield conn
            await conn.rollback()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction, committed on success and rolled back on error."""
        tx: Transaction | None = None
        committed = False
        started = time.perf_counter()
        try:
            async with self._connection(write=True) as conn:
                tx = Transaction(conn, self)
                yield tx
            committed = True
            self.write_error = None
            if self.write_observer is not None:
                self.write_observer(time.perf_counter() - started)
        except OperationalError as exc:
            reason = str(exc.orig or exc)
            if any(sign in reason for sign in UNWRITABLE_SIGNS):
                self.write_error = reason
            raise
        finally:
            if tx is not None:
                tx._ended(committed)

    async def execute(self, sql: str, params: Params = None) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        async with self._connection(write=False) as conn:
            result = await conn.execute(text(sql), dict(params or {}))
            return [dict(r) for r in result.mappings()]

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class Database(SqlDatabase):
    """A SQLite database file migrated to ``schema`` (``None``: used as found)."""

    def __init__(self, path: Path | str, schema: str | None, *, wal: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.schema = schema
        self.wal = wal

    @property
    def label(self) -> str:
        return f"database {self.path}"

    def _create_engine(self, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{self.path}",
            poolclass=AsyncAdaptedQueuePool,
            pool_size=pool_size,
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
            # Each commit reaches the disk before it is acknowledged, WAL or not.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine

    async def open(self) -> None:
        """Create or open the file, set it to 0600 and apply migrations.

        Writes go through one connection; with WAL, reads use their own
        connections and never wait for a writer.
        """
        self._engine = self._create_engine(pool_size=1)
        try:
            async with self._engine.connect():
                pass
            if str(self.path) != ":memory:":
                await asyncio.to_thread(os.chmod, self.path, 0o600)
            if self.schema:
                await migrate(self._engine, self.schema, self.path.name)
            if self.wal and str(self.path) != ":memory:":
                self._reader = self._create_engine(pool_size=2)
        except BaseException:
            await self.close()
            raise
