"""API sessions (``api_sessions.db``), the server-side lifetime of bearer tokens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rportd.gotypes import format_db_time, format_time, parse_time, utcnow
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database, Row, Transaction
from rportd.tasks import BackgroundTask, run_to_end

log = logging.getLogger(__name__)

EXTENSION = timedelta(minutes=10)
DEFAULT_LIFETIME = 600
MAX_LIFETIME = 90 * 24 * 3600
# Sessions created on a secondary (not replicated) take ids above this, so they
# never meet ids replicated from the primary.
LOCAL_ID_FLOOR = 1 << 40


@dataclass
class ApiSession:
    """One login's session."""

    session_id: int
    username: str
    expires_at: datetime
    last_access_at: datetime
    user_agent: str = ""
    ip_address: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "expires_at": format_time(self.expires_at),
            "last_access_at": format_time(self.last_access_at),
            "username": self.username,
            "user_agent": self.user_agent,
            "ip_address": self.ip_address,
        }

    @classmethod
    def from_row(cls, row: Row) -> ApiSession:
        return cls(
            session_id=int(row["session_id"]),
            username=str(row["username"]),
            expires_at=parse_time(str(row["expires_at"])) or utcnow(),
            last_access_at=parse_time(str(row["last_access_at"])) or utcnow(),
            user_agent=str(row["user_agent"] or ""),
            ip_address=str(row["ip_address"] or ""),
        )


_INSERT = (
    "INSERT OR REPLACE INTO api_sessions (session_id, expires_at, username, last_access_at, "
    "user_agent, ip_address) VALUES (:session_id, :expires_at, :username, :last_access_at, "
    ":user_agent, :ip_address)"
)
_UPDATE = (
    "UPDATE api_sessions SET expires_at = :expires_at, last_access_at = :last_access_at, "
    "user_agent = :user_agent, ip_address = :ip_address WHERE session_id = :session_id"
)


def _document(session: ApiSession) -> Document:
    doc = _row(session)
    del doc["session_id"]
    return doc


def _row(session: ApiSession) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "expires_at": format_db_time(session.expires_at),
        "last_access_at": format_db_time(session.last_access_at),
        "username": session.username,
        "user_agent": session.user_agent,
        "ip_address": session.ip_address,
    }


class ApiSessionStore:
    """Sessions cached in memory; access updates are written in batches, not per request.

    Replicated (dataset ``api_sessions``) so that bearer tokens stay valid on the
    node clients fail over to; sessions made on a secondary stay local.
    """

    dataset = "api_sessions"
    changes: ChangeSink = NULL_SINK

    def __init__(self, db: Database, flush_interval: float = 15.0) -> None:
        self.db = db
        self._flush_interval = flush_interval
        self._cache: dict[int, ApiSession] = {}
        self._dirty: set[int] = set()
        self._generation = 0  # bumped by every deletion, so read-throughs never resurrect
        self._task = BackgroundTask(self._run, "api-sessions")

    async def load(self) -> None:
        rows = await self.db.fetch_all(
            "SELECT * FROM api_sessions WHERE DATETIME(expires_at) > DATETIME(:now)",
            {"now": format_db_time(utcnow())},
        )
        self._cache = {int(r["session_id"]): ApiSession.from_row(r) for r in rows}

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        await self.flush()

    async def create(
        self, username: str, lifetime_seconds: int, user_agent: str, ip_address: str
    ) -> ApiSession:
        now = utcnow()
        session = ApiSession(
            session_id=0,
            username=username,
            expires_at=now + timedelta(seconds=lifetime_seconds),
            last_access_at=now,
            user_agent=user_agent,
            ip_address=ip_address,
        )
        values = _row(session)
        async with self.db.transaction() as tx:
            row = await tx.fetch_one("SELECT MAX(session_id) AS top FROM api_sessions")
            top = int(row["top"]) if row and row["top"] is not None else 0
            if not self.changes.writable:
                top = max(top, LOCAL_ID_FLOOR)
            session.session_id = values["session_id"] = top + 1
            await tx.execute(_INSERT, values)
            await self._record(tx, session)
        self._cache[session.session_id] = session
        return session

    async def _record(self, tx: Transaction, session: ApiSession, deleted: bool = False) -> None:
        if self.changes.writable and session.session_id < LOCAL_ID_FLOOR:
            doc = None if deleted else _document(session)
            await self.changes.record(tx, self.dataset, str(session.session_id), doc)

    async def get(self, session_id: int) -> ApiSession | None:
        """A live session (read through to the DB when it is not cached)."""
        session = self._cache.get(session_id)
        while session is None:
            generation = self._generation
            row = await self.db.fetch_one(
                "SELECT * FROM api_sessions WHERE session_id = :id", {"id": session_id}
            )
            if row is None:
                return None
            if generation != self._generation:
                continue  # a deletion committed while we read: read again
            session = self._cache[session_id] = ApiSession.from_row(row)
        if session.expires_at <= utcnow():
            return None
        return session

    def _forget(self, session_ids: Iterable[int]) -> None:
        """Drop deleted sessions from memory; call after the deletion committed."""
        for session_id in session_ids:
            self._cache.pop(session_id, None)
            self._dirty.discard(session_id)
        self._generation += 1

    def touch(self, session: ApiSession, user_agent: str, ip_address: str) -> None:
        """Extend the session and note the access; written by the next flush."""
        now = utcnow()
        session.expires_at = max(session.expires_at, now + EXTENSION)
        session.last_access_at = now
        session.user_agent = user_agent
        session.ip_address = ip_address
        self._dirty.add(session.session_id)

    async def list_for(self, username: str) -> list[ApiSession]:
        await self.flush()
        rows = await self.db.fetch_all(
            "SELECT * FROM api_sessions WHERE username = :u ORDER BY last_access_at",
            {"u": username},
        )
        return [ApiSession.from_row(r) for r in rows]

    async def delete(self, session_id: int) -> bool:
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM api_sessions WHERE session_id = :id", {"id": session_id}
            )
            if deleted:
                await self._record_deleted(tx, session_id)
        self._forget([session_id])
        return deleted > 0

    async def _record_deleted(self, tx: Transaction, session_id: int) -> None:
        if self.changes.writable and session_id < LOCAL_ID_FLOOR:
            await self.changes.record(tx, self.dataset, str(session_id), None)

    async def delete_of(self, username: str, session_id: int) -> bool:
        """Delete a session only if it belongs to ``username``."""
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM api_sessions WHERE username = :u AND session_id = :id",
                {"u": username, "id": session_id},
            )
            if deleted:
                await self._record_deleted(tx, session_id)
        if deleted:
            self._forget([session_id])
        return deleted > 0

    async def delete_for(self, username: str) -> None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(
                "SELECT session_id FROM api_sessions WHERE username = :u", {"u": username}
            )
            await tx.execute("DELETE FROM api_sessions WHERE username = :u", {"u": username})
            for row in rows:
                await self._record_deleted(tx, int(row["session_id"]))
        self._forget(
            [int(r["session_id"]) for r in rows]
            + [s.session_id for s in self._cache.values() if s.username == username]
        )

    async def rename_user(self, old: str, new: str) -> None:
        for session in self._cache.values():
            if session.username == old:
                session.username = new
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE api_sessions SET username = :new WHERE username = :old",
                {"new": new, "old": old},
            )
            for row in await tx.fetch_all(
                "SELECT * FROM api_sessions WHERE username = :u", {"u": new}
            ):
                await self._record(tx, ApiSession.from_row(row))

    async def flush(self) -> None:
        """Write the batched access updates (and replicate the new expiries)."""
        if not self._dirty:
            return
        ids, self._dirty = self._dirty, set()
        sessions = [self._cache[i] for i in ids if i in self._cache]
        try:
            async with self.db.transaction() as tx:
                await tx.execute_many(_UPDATE, [_row(s) for s in sessions])
                for session in sessions:
                    await self._record(tx, session)
        except Exception:
            self._dirty |= ids  # written again by the next flush
            raise

    # ReplicatedDataset
    async def snapshot(self) -> dict[str, Document]:
        # No flush here: a snapshot runs under the change log's lock, which a flush
        # (it records changes) would wait for. Pending extensions follow in the log.
        rows = await self.db.fetch_all(
            "SELECT * FROM api_sessions WHERE session_id < :floor", {"floor": LOCAL_ID_FLOOR}
        )
        return {str(r["session_id"]): _document(ApiSession.from_row(r)) for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        session_id = int(key)
        if doc is None:
            await self.db.execute(
                "DELETE FROM api_sessions WHERE session_id = :id", {"id": session_id}
            )
            self._forget([session_id])
            return
        session = ApiSession.from_row({**doc, "session_id": session_id})
        await self.db.execute(_INSERT, _row(session))
        self._cache[session_id] = session

    async def restore(self, docs: dict[str, Document]) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM api_sessions WHERE session_id < :floor", {"floor": LOCAL_ID_FLOOR}
            )
            await tx.execute_many(
                _INSERT,
                [_row(ApiSession.from_row({**d, "session_id": int(k)})) for k, d in docs.items()],
            )
        await self.load()

    async def purge_expired(self) -> None:
        now = utcnow()
        await self.db.execute(
            "DELETE FROM api_sessions WHERE DATETIME(expires_at) <= DATETIME(:now)",
            {"now": format_db_time(now)},
        )
        self._forget([s.session_id for s in self._cache.values() if s.expires_at <= now])

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self._flush_interval)
            ticks += 1
            try:
                await run_to_end(self.flush())
                if ticks * self._flush_interval >= 3600:
                    ticks = 0
                    await self.purge_expired()
            except Exception:
                log.exception("writing api_sessions.db failed")
