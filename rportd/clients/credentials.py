"""Client credentials: the single ``auth`` pair, a JSON ``auth_file`` or a DB table."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import SqlDatabase
from rportd.store.files import atomic_write_text

log = logging.getLogger(__name__)

SOURCE_STATIC = "Static Credentials"
SOURCE_FILE = "File"
SOURCE_DB = "DB"


class CredentialExists(Exception):
    """A credential with this id exists already."""


class CredentialsReadOnly(Exception):
    """This source cannot be written."""


class ClientCredentials(ABC):
    """Where client auth ids and their passwords come from.

    Writable sources are replicated (dataset ``client_auth``, documents
    ``{"password": ...}`` keyed by auth id) through :attr:`changes`.
    """

    source: str
    writable: bool = False
    dataset = "client_auth"
    changes: ChangeSink = NULL_SINK

    @abstractmethod
    async def lookup(self, auth_id: str) -> str | None:
        """The password of ``auth_id``, or ``None`` if there is no such id."""

    @abstractmethod
    async def list_all(self) -> list[tuple[str, str]]:
        """Every ``(id, password)``, sorted by id."""

    async def add(self, auth_id: str, password: str) -> None:
        raise CredentialsReadOnly(self.source)

    async def delete(self, auth_id: str) -> bool:
        raise CredentialsReadOnly(self.source)

    async def replace_all(self, pairs: dict[str, str]) -> None:
        """Replace the whole set without recording a change."""
        raise CredentialsReadOnly(self.source)

    async def put(self, auth_id: str, password: str | None) -> None:
        """Set or (``None``) remove one credential without recording a change."""
        raise CredentialsReadOnly(self.source)

    # ReplicatedDataset
    async def snapshot(self) -> dict[str, Document]:
        return {k: {"password": v} for k, v in await self.list_all()}

    async def apply(self, key: str, doc: Document | None) -> None:
        await self.put(key, None if doc is None else str(doc["password"]))

    async def restore(self, docs: dict[str, Document]) -> None:
        await self.replace_all({k: str(d["password"]) for k, d in docs.items()})


class StaticCredentials(ClientCredentials):
    """The single ``[server] auth = "id:password"`` pair."""

    source = SOURCE_STATIC

    def __init__(self, pair: str) -> None:
        auth_id, _, password = pair.partition(":")
        self._id = auth_id
        self._password = password

    async def lookup(self, auth_id: str) -> str | None:
        return self._password if auth_id == self._id else None

    async def list_all(self) -> list[tuple[str, str]]:
        return [(self._id, self._password)]


class FileCredentials(ClientCredentials):
    """A JSON object ``{"id": "password"}`` on disk, cached and rewritten atomically."""

    source = SOURCE_FILE
    writable = True
    file_backed = True  # may change behind the change log (hand edits): see rportd.ha.mirror

    def __init__(self, path: Path | str, recheck_seconds: float = 2.0) -> None:
        self.path = Path(path)
        self._recheck = recheck_seconds
        self._entries: dict[str, str] = {}
        self._mtime: float | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def write_lock(self) -> asyncio.Lock:
        """Held while the file is rewritten and the change recorded."""
        return self._lock

    async def load(self) -> None:
        """Read the file (a missing file is an empty set)."""
        self._entries, self._mtime = await asyncio.to_thread(self._read)
        self._checked_at = time.monotonic()

    def _read(self) -> tuple[dict[str, str], float | None]:
        try:
            stat = self.path.stat()
            raw = self.path.read_text()
        except FileNotFoundError:
            return {}, None
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise ValueError(f"client auth file {self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError(
                f'client auth file {self.path} must be a JSON object {{"id": "password", ...}}'
            )
        return data, stat.st_mtime

    async def _refresh(self) -> None:
        """Pick up edits made to the file by hand (checked at most every few seconds)."""
        now = time.monotonic()
        if now - self._checked_at < self._recheck:
            return
        self._checked_at = now
        try:
            mtime = await asyncio.to_thread(lambda: self.path.stat().st_mtime)
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            try:
                await self.load()
            except ValueError as exc:
                log.error("%s; keeping the previous credentials", exc)

    async def lookup(self, auth_id: str) -> str | None:
        await self._refresh()
        return self._entries.get(auth_id)

    async def list_all(self) -> list[tuple[str, str]]:
        await self._refresh()
        return sorted(self._entries.items())

    async def add(self, auth_id: str, password: str) -> None:
        self.changes.ensure_writable(self.dataset)
        async with self._lock:
            await self.load()
            if auth_id in self._entries:
                raise CredentialExists(auth_id)
            await self._write({**self._entries, auth_id: password})
            await self.changes.record(None, self.dataset, auth_id, {"password": password})

    async def delete(self, auth_id: str) -> bool:
        self.changes.ensure_writable(self.dataset)
        async with self._lock:
            await self.load()
            if auth_id not in self._entries:
                return False
            entries = dict(self._entries)
            del entries[auth_id]
            await self._write(entries)
            await self.changes.record(None, self.dataset, auth_id, None)
            return True

    async def put(self, auth_id: str, password: str | None) -> None:
        async with self._lock:
            await self.load()
            entries = dict(self._entries)
            if password is None:
                entries.pop(auth_id, None)
            else:
                entries[auth_id] = password
            await self._write(entries)

    async def replace_all(self, pairs: dict[str, str]) -> None:
        async with self._lock:
            await self._write(dict(pairs))

    async def _write(self, entries: dict[str, str]) -> None:
        text = json.dumps(entries, indent="\t", ensure_ascii=False) + "\n"
        self._mtime = await asyncio.to_thread(atomic_write_text, self.path, text)
        self._entries = entries
        self._checked_at = time.monotonic()


class TableCredentials(ClientCredentials):
    """Rows ``(id, password)`` of ``[server] auth_table`` in the ``[database]`` DB."""

    source = SOURCE_DB
    writable = True

    def __init__(self, db: SqlDatabase, table: str) -> None:
        self.db = db
        self.table = db.quote(table)

    async def check(self) -> None:
        """Fail at start if the table or its columns are missing."""
        await self.db.fetch_all(f"SELECT id, password FROM {self.table} LIMIT 0")

    async def lookup(self, auth_id: str) -> str | None:
        row = await self.db.fetch_one(
            f"SELECT password FROM {self.table} WHERE id = :id", {"id": auth_id}
        )
        return str(row["password"]) if row else None

    async def list_all(self) -> list[tuple[str, str]]:
        rows = await self.db.fetch_all(f"SELECT id, password FROM {self.table} ORDER BY id")
        return [(str(r["id"]), str(r["password"])) for r in rows]

    async def add(self, auth_id: str, password: str) -> None:
        if await self.lookup(auth_id) is not None:
            raise CredentialExists(auth_id)
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    f"INSERT INTO {self.table} (id, password) VALUES (:id, :pw)",
                    {"id": auth_id, "pw": password},
                )
                await self.changes.record(tx, self.dataset, auth_id, {"password": password})
        except IntegrityError:
            raise CredentialExists(auth_id) from None

    async def delete(self, auth_id: str) -> bool:
        async with self.db.transaction() as tx:
            deleted = await tx.execute(f"DELETE FROM {self.table} WHERE id = :id", {"id": auth_id})
            if deleted:
                await self.changes.record(tx, self.dataset, auth_id, None)
        return deleted > 0

    async def put(self, auth_id: str, password: str | None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM {self.table} WHERE id = :id", {"id": auth_id})
            if password is not None:
                await tx.execute(
                    f"INSERT INTO {self.table} (id, password) VALUES (:id, :pw)",
                    {"id": auth_id, "pw": password},
                )

    async def replace_all(self, pairs: dict[str, str]) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM {self.table}")
            await tx.execute_many(
                f"INSERT INTO {self.table} (id, password) VALUES (:id, :pw)",
                [{"id": k, "pw": v} for k, v in pairs.items()],
            )
