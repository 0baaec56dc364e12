"""The ``[database]`` DB: a SQLite file, or a MySQL/MariaDB or PostgreSQL server.

A server is reached through SQLAlchemy's async dialects (asyncmy, asyncpg) with
a connection pool. A connection is checked before use (a restarted server is
reconnected to), every operation has a deadline, and a server that cannot be
reached answers :class:`DatabaseUnavailable` naming it, until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from rportd.config import DatabaseConfig
from rportd.store.database import Database, EngineDatabase, SqlDatabase

log = logging.getLogger(__name__)

DRIVERS = {"mysql": "mysql+asyncmy", "postgres": "postgresql+asyncpg"}
CONNECT_TIMEOUT = 5.0  # seconds to connect and log in
OPERATION_TIMEOUT = 10.0  # seconds for one statement or transaction, waiting for the pool included


class DatabaseError(Exception):
    """A statement failed in the ``[database]`` DB; the message names it and says why."""


class DatabaseUnavailable(DatabaseError):
    """The ``[database]`` server cannot be reached or refuses the connection (for now)."""


def error_reason(exc: BaseException) -> str:
    """The driver's own words for ``exc``, without SQLAlchemy's SQL echo and links."""
    orig: BaseException = getattr(exc, "orig", None) or exc
    args = orig.args
    if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"  # MySQL: (code, message)
    reason = str(orig).strip()
    if reason.startswith("<class '") and ": " in reason:
        reason = reason.split(": ", 1)[1]  # asyncpg, as SQLAlchemy adapts it
    return reason.splitlines()[0] if reason else type(orig).__name__


def is_read_only(exc: DBAPIError) -> bool:
    """Whether a write failed because the server is read-only (a replica, a standby)."""
    orig = exc.orig
    code = orig.args[0] if orig is not None and orig.args else None
    return code in (1290, 1836) or getattr(orig, "sqlstate", None) == "25006"


class ServerDatabase(EngineDatabase):
    """A database on a MySQL/MariaDB or PostgreSQL server, shared by every HA node."""

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        connect_timeout: float | None = None,
        operation_timeout: float | None = None,
        pool_size: int = 5,
    ) -> None:
        super().__init__()
        self.config = config
        self.endpoint = config.endpoint()
        self.connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self.operation_timeout = (
            OPERATION_TIMEOUT if operation_timeout is None else operation_timeout
        )
        self.pool_size = pool_size

    @property
    def label(self) -> str:
        return f'{self.config.db_type} database "{self.config.db_name}" at {self.endpoint}'

    @property
    def shared(self) -> bool:
        return True

    def _connect_args(self) -> dict[str, Any]:
        cfg, where = self.config, self.endpoint
        args: dict[str, Any] = {"user": cfg.db_user or None, "password": cfg.db_password}
        if cfg.db_type == "mysql":
            args.update(db=cfg.db_name, connect_timeout=self.connect_timeout)
            if where.socket:
                args["unix_socket"] = where.socket
            else:
                args.update(host=where.host, port=where.port)
            return args
        args.update(
            database=cfg.db_name,
            timeout=self.connect_timeout,
            command_timeout=self.operation_timeout,
            server_settings={"application_name": "rportd"},
        )
        if where.socket:
            # libpq style: the socket's directory; a socket file's name carries the port.
            directory, _, name = where.socket.rpartition("/")
            if name.startswith(".s.PGSQL.") and name[9:].isdigit():
                args.update(host=directory or "/", port=int(name[9:]))
            else:
                args["host"] = where.socket
        else:
            args.update(host=where.host, port=where.port)
        return args

    async def open(self) -> None:
        """Create the pool and try one connection (``DatabaseUnavailable`` if it fails)."""
        self._engine = self._create_engine()
        # Reads need no transaction: their own pool in autocommit saves its round trips.
        self._reader = self._create_engine(isolation_level="AUTOCOMMIT")
        await self.fetch_all("SELECT 1")

    def _create_engine(self, **options: Any) -> AsyncEngine:
        return create_async_engine(
            URL.create(DRIVERS[self.config.db_type]),
            connect_args=self._connect_args(),
            pool_size=self.pool_size,
            max_overflow=self.pool_size,
            pool_timeout=self.operation_timeout,
            pool_pre_ping=True,  # a connection the server dropped (restart) is replaced
            pool_recycle=1800,  # below MySQL's wait_timeout and most firewalls' idle limits
            **options,
        )

    @asynccontextmanager
    async def _connection(self, write: bool) -> AsyncIterator[AsyncConnection]:
        acquired = False
        try:
            async with asyncio.timeout(self.operation_timeout):
                async with super()._connection(write) as conn:
                    acquired = True
                    yield conn
        except IntegrityError:
            raise  # a duplicate: the caller says what already exists
        except TimeoutError:
            raise DatabaseUnavailable(
                f"{self.label} did not answer within {self.operation_timeout:g}s"
            ) from None
        except DBAPIError as exc:
            if not acquired or exc.connection_invalidated:
                raise DatabaseUnavailable(
                    f"{self.label} is unavailable: {error_reason(exc)}"
                ) from None
            if is_read_only(exc):
                raise DatabaseUnavailable(
                    f"{self.label} only takes reads now (a replica or hot standby?): "
                    f"{error_reason(exc)}"
                ) from None
            raise DatabaseError(f"{self.label}: {error_reason(exc)}") from None
        except Exception as exc:
            if acquired and not isinstance(exc, OSError):
                raise
            # Connecting failed (the driver's own errors too: wrong password, no such
            # database, ...), or the connection broke.
            raise DatabaseUnavailable(f"{self.label} is unavailable: {error_reason(exc)}") from None


def external_database(config: DatabaseConfig, *, wal: bool) -> SqlDatabase:
    """The ``[database]`` DB, not yet opened (``ValueError`` if it cannot be described)."""
    if not config.db_name:
        what = "the path of the SQLite file" if config.db_type == "sqlite" else "a database name"
        raise ValueError(f"[database] db_name must be {what}")
    if config.on_server:
        return ServerDatabase(config)
    return Database(config.db_name, None, wal=wal)
