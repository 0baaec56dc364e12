"""SQL databases: the base, servers through SQLAlchemy's asyncio engine, and SQLite files."""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from rportd.store.migrations import migrate
from rportd.store.sqlite import SqliteThread, Statement

log = logging.getLogger(__name__)

# SQLite errors that mean the file cannot be written now (not a bad statement).
UNWRITABLE_SIGNS = ("readonly", "disk", "locked", "unable to open", "I/O")

Row = dict[str, Any]
Params = Mapping[str, Any] | None


class Transaction(abc.ABC):
    """Statements run inside one database transaction."""

    def __init__(self, database: SqlDatabase) -> None:
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

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement; the rows it changed."""

    @abc.abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Run ``sql`` once per row in one driver call; the rows it changed in total."""

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        """The rows a query returns."""

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class EngineTransaction(Transaction):
    """A transaction on a SQLAlchemy asyncio connection."""

    def __init__(self, conn: AsyncConnection, database: SqlDatabase) -> None:
        super().__init__(database)
        self._conn = conn

    async def execute(self, sql: str, params: Params = None) -> int:
        result = await self._conn.execute(text(sql), dict(params or {}))
        return int(result.rowcount)

    async def execute_many(self, sql: str, rows: Iterable[Mapping[str, Any]]) -> int:
        batch = [dict(r) for r in rows]
        if not batch:
            return 0
        result = await self._conn.execute(text(sql), batch)
        return int(result.rowcount)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        result = await self._conn.execute(text(sql), dict(params or {}))
        return [dict(r) for r in result.mappings()]


class SqliteTransaction(Transaction):
    """A transaction on rportd's own SQLite connection thread (one hand-off a statement)."""

    def __init__(self, conn: SqliteThread, database: SqlDatabase) -> None:
        super().__init__(database)
        self._conn = conn

    async def execute(self, sql: str, params: Params = None) -> int:
        return await self._conn.call(Statement(sql, dict(params or {})).rowcount)

    async def execute_many(self, sql: str, rows: Iterable[Mapping[str, Any]]) -> int:
        batch = [dict(r) for r in rows]
        if not batch:
            return 0
        return await self._conn.call(Statement(sql, batch).rowcount)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        return await self._conn.call(Statement(sql, dict(params or {})).rows)


class SqlDatabase(abc.ABC):
    """A database: write transactions and reads."""

    def __init__(self) -> None:
        # Called with the duration of every committed write transaction (metrics).
        self.write_observer: Callable[[float], None] | None = None
        # Why the last write failed to commit, if it did (``None`` after a good one).
        self.write_error: str | None = None

    @property
    def label(self) -> str:
        """How messages name this database."""
        return "database"

    @property
    def shared(self) -> bool:
        """True when every HA node reaches the same data (the database replicates itself)."""
        return False

    @abc.abstractmethod
    def quote(self, name: str) -> str:
        """A table or column name (``schema.table`` too) quoted for this database's SQL."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and check that the database answers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection."""

    @abc.abstractmethod
    def _begin(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction, committed when the block ends without error."""

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        """The rows a query returns, read outside any write transaction."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction, committed on success and rolled back on error."""
        tx: Transaction | None = None
        committed = False
        started = time.perf_counter()
        try:
            async with self._begin() as tx:
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

    async def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class EngineDatabase(SqlDatabase):
    """A database reached through an async SQLAlchemy engine."""

    def __init__(self) -> None:
        super().__init__()
        self._engine: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{self.label} is not open")
        return self._engine

    def quote(self, name: str) -> str:
        preparer = self.engine.dialect.identifier_preparer
        return ".".join(preparer.quote_identifier(part) for part in name.split("."))

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
    async def _begin(self) -> AsyncIterator[Transaction]:
        async with self._connection(write=True) as conn:
            yield EngineTransaction(conn, self)

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        async with self._connection(write=False) as conn:
            result = await conn.execute(text(sql), dict(params or {}))
            return [dict(r) for r in result.mappings()]


class Database(SqlDatabase):
    """A SQLite database file migrated to ``schema`` (``None``: used as found).

    Writes go through one connection, one transaction at a time; with WAL, reads use
    connections of their own and never wait for a writer.
    """

    READERS = 2

    def __init__(self, path: Path | str, schema: str | None, *, wal: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.schema = schema
        self.wal = wal and str(path) != ":memory:"
        self._writer: SqliteThread | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[SqliteThread] | None = None
        self._opened: list[SqliteThread] = []

    @property
    def label(self) -> str:
        return f"database {self.path}"

    def quote(self, name: str) -> str:
        return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))

    def _migration_engine(self) -> AsyncEngine:
        """The engine migrations run through (then disposed): SQLAlchemy's, as for every DB."""
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{self.path}",
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            connect_args={"timeout": 5},
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide where transactions begin.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine

    async def _connect(self) -> SqliteThread:
        conn = SqliteThread(self.path, wal=self.wal)
        self._opened.append(conn)
        await conn.open()
        return conn

    async def open(self) -> None:
        """Create or open the file, set it to 0600 and apply migrations."""
        try:
            self._writer = await self._connect()
            if str(self.path) != ":memory:":
                await asyncio.to_thread(os.chmod, self.path, 0o600)
            if self.schema:
                engine = self._migration_engine()
                try:
                    await migrate(engine, self.schema, self.path.name)
                finally:
                    await engine.dispose()
            if self.wal:
                self._readers = asyncio.Queue()
                for _ in range(self.READERS):
                    self._readers.put_nowait(await self._connect())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        opened, self._opened = self._opened, []
        self._writer = self._readers = None
        for conn in opened:
            await conn.close()

    @property
    def writer(self) -> SqliteThread:
        if self._writer is None:
            raise RuntimeError(f"{self.label} is not open")
        return self._writer

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Transaction]:
        conn = self.writer
        async with self._write_lock:
            await conn.call(_sql_begin)
            try:
                yield SqliteTransaction(conn, self)
                await conn.call(_sql_commit)
            except BaseException:
                # Queued before anything else can be: it runs even if this wait is cancelled.
                await asyncio.shield(conn.submit(_sql_rollback))
                raise

    async def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        statement = Statement(sql, dict(params or {}))
        if self._readers is None:
            async with self._write_lock:
                return await self.writer.call(statement.rows)
        conn = await self._readers.get()
        try:
            return await conn.call(statement.rows)
        finally:
            self._readers.put_nowait(conn)


def _sql_begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")


def _sql_commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _sql_rollback(conn: sqlite3.Connection) -> None:
    # SQLite ends some transactions itself on an error (a full disk, say): nothing to undo then.
    if conn.in_transaction:
        conn.execute("ROLLBACK")
