"""Personal API tokens (``api_token.db``): ``<prefix>_<secret>`` used as a basic-auth password.

Rows are cached in memory (tokens change rarely) so that checking a token needs no
database read; a successful bcrypt check is remembered as a SHA-256 digest so that
scripts calling the API in a loop do not pay for bcrypt on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import string
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from rportd.auth.passwords import hash_password, verify_password
from rportd.gotypes import format_db_time, format_time, parse_time, utcnow
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database, Row, Transaction

PREFIX_LENGTH = 8
SCOPE_READ = "read"
SCOPE_READ_WRITE = "read+write"
SCOPE_CLIENTS_AUTH = "clients-auth"
SCOPES = (SCOPE_READ, SCOPE_READ_WRITE, SCOPE_CLIENTS_AUTH)
DEFAULT_VALIDITY = timedelta(days=365)

_ALPHANUM = string.ascii_letters + string.digits


class TokenNameTaken(Exception):
    """The user has another token with this name."""

    def __str__(self) -> str:
        return "A token with the same name already exists"


class TokenNotFound(Exception):
    """No token with this prefix for the user."""


@dataclass
class ApiToken:
    """One stored token (``token`` is the bcrypt hash of the secret part)."""

    username: str
    prefix: str
    name: str
    scope: str
    token: str
    created_at: datetime | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at < (now or utcnow())

    def to_api(self) -> dict[str, Any]:
        """The ``GET /me/tokens`` item."""
        return {
            "prefix": self.prefix,
            "name": self.name,
            "created_at": format_time(self.created_at),
            "expires_at": format_time(self.expires_at),
            "scope": self.scope,
        }

    def document(self) -> Document:
        return {
            "username": self.username,
            "prefix": self.prefix,
            "name": self.name,
            "scope": self.scope,
            "token": self.token,
            "created_at": format_time(self.created_at),
            "expires_at": format_time(self.expires_at),
        }

    @classmethod
    def from_document(cls, doc: Document) -> ApiToken:
        return cls(
            username=str(doc["username"]),
            prefix=str(doc["prefix"]),
            name=str(doc.get("name") or ""),
            scope=str(doc.get("scope") or ""),
            token=str(doc["token"]),
            created_at=_time(doc.get("created_at")),
            expires_at=_time(doc.get("expires_at")),
        )

    @classmethod
    def from_row(cls, row: Row) -> ApiToken:
        return cls(
            username=str(row["username"]),
            prefix=str(row["prefix"]),
            name=str(row["name"] or ""),
            scope=str(row["scope"] or ""),
            token=str(row["token"] or ""),
            created_at=_time(row["created_at"]),
            expires_at=_time(row["expires_at"]),
        )


def _time(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return parse_time(str(value))
    except ValueError:
        return None


def token_key(username: str, prefix: str) -> str:
    """Replication key of a token."""
    return json.dumps([username, prefix])


def split_token(secret: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of ``<prefix>_<secret>`` when the prefix has the right length."""
    prefix, sep, rest = secret.partition("_")
    if not sep or len(prefix) != PREFIX_LENGTH:
        return None
    return prefix, rest


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


_INSERT = (
    "INSERT INTO api_tokens (username, prefix, name, created_at, expires_at, scope, token) "
    "VALUES (:username, :prefix, :name, :created_at, :expires_at, :scope, :token)"
)


def _row(token: ApiToken) -> dict[str, Any]:
    return {
        "username": token.username,
        "prefix": token.prefix,
        "name": token.name,
        "created_at": format_db_time(token.created_at or utcnow()),
        "expires_at": format_db_time(token.expires_at),
        "scope": token.scope,
        "token": token.token,
    }


class ApiTokenStore:
    """The ``api_tokens`` table; replicated as dataset ``api_tokens``."""

    dataset = "api_tokens"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.changes: ChangeSink = NULL_SINK
        self._tokens: dict[tuple[str, str], ApiToken] = {}
        self._verified: dict[tuple[str, str], bytes] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        rows = await self.db.fetch_all("SELECT * FROM api_tokens")
        self._tokens = {(t.username, t.prefix): t for t in map(ApiToken.from_row, rows)}
        self._verified.clear()

    # --- reads -------------------------------------------------------------------

    def list_for(self, username: str) -> list[ApiToken]:
        """The user's tokens, oldest first."""
        mine = [t for t in self._tokens.values() if t.username == username]
        return sorted(mine, key=lambda t: (t.created_at or utcnow(), t.prefix))

    def get(self, username: str, prefix: str) -> ApiToken | None:
        return self._tokens.get((username, prefix))

    async def verify(self, username: str, secret: str) -> str | None:
        """The scope of ``<prefix>_<secret>`` for ``username``; ``None`` if invalid or expired."""
        parts = split_token(secret)
        if parts is None:
            return None
        key = (username, parts[0])
        token = self._tokens.get(key)
        if token is None or token.expired():
            return None
        digest = _digest(parts[1])
        known = self._verified.get(key)
        if known is not None and hmac.compare_digest(known, digest):
            return token.scope
        if not await verify_password(token.token, parts[1]):
            return None
        if self._tokens.get(key) is token:
            self._verified[key] = digest
        return token.scope

    # --- writes ------------------------------------------------------------------

    async def create(
        self, username: str, name: str, scope: str, expires_at: datetime | None
    ) -> tuple[ApiToken, str]:
        """A new token and its clear ``<prefix>_<secret>`` (shown once)."""
        secret = str(uuid.uuid4())
        hashed = await hash_password(secret)
        created = utcnow().replace(microsecond=0)
        async with self._lock:
            if any(t.name == name for t in self.list_for(username)):
                raise TokenNameTaken()
            prefix = "".join(secrets.choice(_ALPHANUM) for _ in range(PREFIX_LENGTH))
            while (username, prefix) in self._tokens:
                prefix = "".join(secrets.choice(_ALPHANUM) for _ in range(PREFIX_LENGTH))
            token = ApiToken(
                username=username,
                prefix=prefix,
                name=name,
                scope=scope,
                token=hashed,
                created_at=created,
                expires_at=expires_at if expires_at is not None else created + DEFAULT_VALIDITY,
            )
            async with self.db.transaction() as tx:
                await tx.execute(_INSERT, _row(token))
                await self._record(tx, token)
            self._tokens[(username, prefix)] = token
        return token, f"{prefix}_{secret}"

    async def update(
        self, username: str, prefix: str, name: str, expires_at: datetime | None
    ) -> ApiToken:
        """Rename and/or change the expiry (empty name / ``None``: unchanged)."""
        async with self._lock:
            current = self._tokens.get((username, prefix))
            if current is None:
                raise TokenNotFound(prefix)
            if name and any(t.name == name for t in self.list_for(username)):
                raise TokenNameTaken()
            token = replace(
                current,
                name=name or current.name,
                expires_at=expires_at if expires_at is not None else current.expires_at,
            )
            async with self.db.transaction() as tx:
                await tx.execute(
                    "UPDATE api_tokens SET name = :name, expires_at = :expires_at "
                    "WHERE username = :username AND prefix = :prefix",
                    _row(token),
                )
                await self._record(tx, token)
            self._tokens[(username, prefix)] = token
            return token

    async def delete(self, username: str, prefix: str) -> None:
        async with self._lock:
            async with self.db.transaction() as tx:
                deleted = await tx.execute(
                    "DELETE FROM api_tokens WHERE username = :u AND prefix = :p",
                    {"u": username, "p": prefix},
                )
                if not deleted:
                    raise TokenNotFound(prefix)
                await self.changes.record(tx, self.dataset, token_key(username, prefix), None)
            self._forget(username, prefix)

    async def delete_for(self, username: str) -> None:
        """Remove every token of a (deleted) user."""
        async with self._lock:
            doomed = [t.prefix for t in self.list_for(username)]
            if not doomed:
                return
            async with self.db.transaction() as tx:
                await tx.execute("DELETE FROM api_tokens WHERE username = :u", {"u": username})
                for prefix in doomed:
                    await self.changes.record(tx, self.dataset, token_key(username, prefix), None)
            for prefix in doomed:
                self._forget(username, prefix)

    async def rename_user(self, old: str, new: str) -> None:
        """Move a renamed user's tokens to the new name."""
        async with self._lock:
            moved = self.list_for(old)
            if not moved:
                return
            stale = self.list_for(new)
            async with self.db.transaction() as tx:
                await tx.execute("DELETE FROM api_tokens WHERE username = :new", {"new": new})
                for token in stale:
                    await self.changes.record(tx, self.dataset, token_key(new, token.prefix), None)
                await tx.execute(
                    "UPDATE api_tokens SET username = :new WHERE username = :old",
                    {"new": new, "old": old},
                )
                for token in moved:
                    await self.changes.record(tx, self.dataset, token_key(old, token.prefix), None)
                    await self._record(tx, replace(token, username=new))
            for token in stale:
                self._forget(new, token.prefix)
            for token in moved:
                self._forget(old, token.prefix)
                self._tokens[(new, token.prefix)] = replace(token, username=new)

    def _forget(self, username: str, prefix: str) -> None:
        self._tokens.pop((username, prefix), None)
        self._verified.pop((username, prefix), None)

    async def _record(self, tx: Transaction, token: ApiToken) -> None:
        await self.changes.record(
            tx, self.dataset, token_key(token.username, token.prefix), token.document()
        )

    # --- ReplicatedDataset ---------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        rows = await self.db.fetch_all("SELECT * FROM api_tokens")
        tokens = [ApiToken.from_row(r) for r in rows]
        return {token_key(t.username, t.prefix): t.document() for t in tokens}

    async def apply(self, key: str, doc: Document | None) -> None:
        username, prefix = (str(part) for part in json.loads(key))
        async with self._lock, self.db.transaction() as tx:
            await self._put(tx, username, prefix, doc)
        self._forget(username, prefix)
        if doc is not None:
            self._tokens[(username, prefix)] = ApiToken.from_document(doc)

    async def restore(self, docs: dict[str, Document]) -> None:
        async with self._lock:
            async with self.db.transaction() as tx:
                await tx.execute("DELETE FROM api_tokens")
                await tx.execute_many(
                    _INSERT, [_row(ApiToken.from_document(d)) for d in docs.values()]
                )
            await self.load()

    async def _put(self, tx: Transaction, username: str, prefix: str, doc: Document | None) -> None:
        await tx.execute(
            "DELETE FROM api_tokens WHERE username = :u AND prefix = :p",
            {"u": username, "p": prefix},
        )
        if doc is not None:
            await tx.execute(_INSERT, _row(ApiToken.from_document(doc)))
