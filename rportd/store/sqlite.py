"""One SQLite connection on its own thread: each statement is one hand-off to it and back.

SQLAlchemy's asyncio engine over aiosqlite costs about eight thread hand-offs and a greenlet
switch per statement (4.8 ms of CPU for a one-row write transaction plus a read, against
0.8 ms here; ``bench``'s command round trip is mostly such statements). So SQLite files are
driven here with the standard library's ``sqlite3``; the engine is used only to apply
migrations. Errors come back as SQLAlchemy's exception classes (``IntegrityError``,
``OperationalError``, ...), as they did through the engine, so callers need not care.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

T = TypeVar("T")
Row = dict[str, Any]
Work = Callable[[sqlite3.Connection], Any]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the statement ran all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteThread:
    """A ``sqlite3`` connection owned by one thread, fed through a FIFO queue.

    The queue keeps the order statements were submitted in, so a ``ROLLBACK`` submitted by a
    cancelled transaction still runs before the next transaction's ``BEGIN``.
    """

    def __init__(self, path: Path, *, wal: bool, timeout: float = 5.0) -> None:
        self.path = path
        self.wal = wal
        self.timeout = timeout
        self._queue: queue.SimpleQueue[tuple[asyncio.Future[Any], Work | None]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Start the thread and connect (pragmas as every rportd SQLite connection has them)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._serve, name=f"sqlite {self.path.name}", daemon=True
        )
        self._thread.start()
        await self.call(_nothing)  # raises what connecting raised

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        conn: sqlite3.Connection | None = None
        connect_error: BaseException | None = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            if self.wal:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            # Each commit reaches the disk before it is acknowledged, WAL or not.
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            connect_error = _as_dbapi_error("connect", None, exc)
        while True:
            future, work = self._queue.get()
            if work is None:
                if conn is not None:
                    conn.close()
                loop.call_soon_threadsafe(_resolve, future, None, None)
                return
            result: Any = None
            error: BaseException | None = connect_error
            if conn is not None:
                try:
                    result = work(conn)
                except sqlite3.Error as exc:
                    statement = getattr(work, "__self__", None)
                    error = _as_dbapi_error(getattr(statement, "sql", ""), None, exc)
                except BaseException as exc:  # handed to the caller
                    error = exc
            loop.call_soon_threadsafe(_resolve, future, result, error)

    def submit(self, work: Work) -> asyncio.Future[Any]:
        """Queue ``work(connection)``; its result (or error) arrives in the returned future."""
        if self._loop is None:
            raise RuntimeError(f"SQLite connection to {self.path} is not open")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((future, work))
        return future

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the thread and wait for it."""
        result: T = await self.submit(work)
        return result

    async def close(self) -> None:
        """Close the connection and end the thread (after what is queued)."""
        if self._thread is None or self._loop is None:
            return
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((future, None))
        await future
        await asyncio.to_thread(self._thread.join)
        self._thread = None


def _nothing(_conn: sqlite3.Connection) -> None:
    return None


def _as_dbapi_error(sql: str, params: Any, exc: sqlite3.Error) -> DBAPIError:
    """The SQLAlchemy exception the engine would have raised for ``exc``."""
    error = DBAPIError.instance(sql, params, exc, sqlite3.Error)
    assert isinstance(error, DBAPIError)
    return error


class Statement:
    """One statement as work for the connection thread (carries its SQL for error messages)."""

    __slots__ = ("many", "params", "sql")

    def __init__(self, sql: str, params: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> None:
        self.sql = sql
        self.params = params
        self.many = not isinstance(params, Mapping)

    def rowcount(self, conn: sqlite3.Connection) -> int:
        if self.many:
            cursor = conn.executemany(self.sql, self.params)
        else:
            cursor = conn.execute(self.sql, self.params)  # type: ignore[arg-type]
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def rows(self, conn: sqlite3.Connection) -> list[Row]:
        cursor = conn.execute(self.sql, self.params)  # type: ignore[arg-type]
        try:
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()
