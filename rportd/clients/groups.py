"""Client groups (``client_groups.db``): clients matched by attribute patterns (api.md §6).

Groups are few and read on every access check, so they are kept in memory and written
through to SQLite; the store is replicated as dataset ``client_groups``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rportd.clients.model import Client
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database, Row, Transaction

ID_MAX_LENGTH = 30
VALID_ID_CHARS = "A-Za-z0-9_-*"
_INVALID_ID = re.compile(r"[^*A-Za-z0-9_-]")

# Params keys in upstream's order; "tag" is the one that is not a list of patterns.
PARAM_KEYS = (
    "client_id",
    "name",
    "os",
    "os_arch",
    "os_family",
    "os_kernel",
    "hostname",
    "ipv4",
    "ipv6",
    "tag",
    "version",
    "address",
    "client_auth_id",
    "connection_state",
)

_CLIENT_VALUES: dict[str, Callable[[Client], list[str]]] = {
    "client_id": lambda c: [c.id],
    "name": lambda c: [c.name],
    "os": lambda c: [c.os],
    "os_arch": lambda c: [c.os_arch],
    "os_family": lambda c: [c.os_family],
    "os_kernel": lambda c: [c.os_kernel],
    "hostname": lambda c: [c.hostname],
    "ipv4": lambda c: list(c.ipv4 or ()),
    "ipv6": lambda c: list(c.ipv6 or ()),
    "version": lambda c: [c.version],
    "address": lambda c: [c.address],
    "client_auth_id": lambda c: [c.client_auth_id],
    "connection_state": lambda c: [c.connection_state],
}


class InvalidGroup(ValueError):
    """The group definition is not acceptable; the message says why."""


class GroupExists(Exception):
    """A client group with this id exists already."""


def _pattern(text: str) -> re.Pattern[str]:
    """A case-insensitive whole-value pattern where ``*`` matches anything."""
    body = ".*".join(re.escape(part) for part in text.lower().split("*"))
    return re.compile(body, re.DOTALL)


class _Patterns:
    """One params key: OR of patterns, matched case-insensitively."""

    def __init__(self, values: list[str]) -> None:
        self.patterns = [_pattern(v) for v in values]

    def matches_one_of(self, values: list[str]) -> bool:
        if not self.patterns and not values:
            return True
        lowered = [v.lower() for v in values]
        return any(p.fullmatch(v) for p in self.patterns for v in lowered)


def parse_tag(raw: Any) -> tuple[str, list[str]]:
    """``(operator, operands)`` of a ``tag`` param: a list (OR) or ``{"and"|"or": [...]}``."""
    if isinstance(raw, dict) and len(raw) == 1:
        operator, operands = next(iter(raw.items()))
        if isinstance(operands, list | None) and all(isinstance(o, str) for o in operands or ()):
            if operator.lower() not in ("and", "or"):
                raise InvalidGroup("error, only and/or is allowed for tags group definitions")
            if not operands:
                raise InvalidGroup("error parsing tags group definitions")
            return operator, list(operands)
    if isinstance(raw, list) and raw and all(isinstance(o, str) for o in raw):
        return "or", list(raw)
    raise InvalidGroup("error parsing tags group definitions")


class _TagMatcher:
    """The ``tag`` param, compiled once: ``and`` needs every operand, ``or`` one of them."""

    def __init__(self, raw: Any) -> None:
        try:
            self.operator, operands = parse_tag(raw)
        except InvalidGroup:
            self.operator, operands = "", []
        self.needed = len(operands)
        self.patterns = [_pattern(op) for op in dict.fromkeys(operands)]

    def matches(self, tags: list[str]) -> bool:
        lowered = [t.lower() for t in tags]
        matched = sum(1 for p in self.patterns if any(p.fullmatch(t) for t in lowered))
        if self.operator == "and":
            return matched == self.needed
        if self.operator == "or":
            return matched > 0
        return False


def normalize_params(raw: Any) -> dict[str, Any]:
    """``params`` with every key (``None`` when unset), validated as upstream decodes it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidGroup("params must be a JSON object")
    unknown = [k for k in raw if k not in PARAM_KEYS]
    if unknown:
        raise InvalidGroup(f'json: unknown field "{unknown[0]}"')
    params: dict[str, Any] = {}
    for key in PARAM_KEYS:
        value = raw.get(key)
        if key == "tag" or value is None:
            params[key] = value
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidGroup(f"params.{key} must be a list of strings")
        params[key] = list(value)
    return params


@dataclass
class ClientGroup:
    """A client group: clients whose attributes match ``params``."""

    id: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=lambda: normalize_params(None))
    allowed_user_groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._matchers = {
            key: _Patterns(value)
            for key, value in self.params.items()
            if key != "tag" and value is not None
        }
        tag = self.params.get("tag")
        self._tag = None if tag is None else _TagMatcher(tag)
        self._empty = all(v is None for v in self.params.values())

    def matches(self, client: Client) -> bool:
        """Whether ``client`` belongs to this group (a group without params has no clients)."""
        if self._empty:
            return False
        for key, matcher in self._matchers.items():
            if not matcher.matches_one_of(_CLIENT_VALUES[key](client)):
                return False
        return self._tag is None or self._tag.matches(list(client.tags or ()))

    def allows(self, user_groups: Iterable[str]) -> bool:
        return bool(set(user_groups) & set(self.allowed_user_groups))

    def validate(self) -> None:
        """Raise :class:`InvalidGroup` with upstream's wording if the id or tag is bad."""
        if not self.id.strip():
            raise InvalidGroup("group ID cannot be empty")
        if len(self.id) > ID_MAX_LENGTH:
            raise InvalidGroup(f"invalid group ID: max length {ID_MAX_LENGTH}, got {len(self.id)}")
        if _INVALID_ID.search(self.id):
            raise InvalidGroup(f'invalid group ID "{self.id}": can contain only "{VALID_ID_CHARS}"')
        if self.params.get("tag") is not None:
            parse_tag(self.params["tag"])

    def document(self) -> Document:
        return {
            "id": self.id,
            "description": self.description,
            "params": self.params,
            "allowed_user_groups": list(self.allowed_user_groups),
        }

    @classmethod
    def from_document(cls, doc: Document) -> ClientGroup:
        return cls(
            id=str(doc["id"]),
            description=str(doc.get("description") or ""),
            params=normalize_params(doc.get("params")),
            allowed_user_groups=[str(g) for g in doc.get("allowed_user_groups") or []],
        )

    @classmethod
    def from_row(cls, row: Row) -> ClientGroup:
        try:
            params = normalize_params(json.loads(row["params"] or "null"))
        except (ValueError, InvalidGroup):
            params = normalize_params(None)
        try:
            allowed = json.loads(row["allowed_user_groups"] or "null") or []
        except ValueError:
            allowed = []
        return cls(
            id=str(row["id"]),
            description=str(row["description"] or ""),
            params=params,
            allowed_user_groups=[str(g) for g in allowed] if isinstance(allowed, list) else [],
        )


def _row(group: ClientGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "description": group.description,
        "params": json.dumps(group.params, separators=(",", ":")),
        "allowed_user_groups": json.dumps(group.allowed_user_groups),
    }


_UPSERT = (
    "INSERT OR REPLACE INTO client_groups (id, description, params, allowed_user_groups) "
    "VALUES (:id, :description, :params, :allowed_user_groups)"
)


class ClientGroupStore:
    """Every client group, in memory and in ``client_groups.db``."""

    dataset = "client_groups"

    def __init__(self, db: Database) -> None:
        self.db = db
        self.changes: ChangeSink = NULL_SINK
        self._groups: dict[str, ClientGroup] = {}
        self._sorted: list[ClientGroup] = []
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        rows = await self.db.fetch_all("SELECT * FROM client_groups")
        self._set({r["id"]: ClientGroup.from_row(r) for r in rows})

    def _set(self, groups: dict[str, ClientGroup]) -> None:
        self._groups = groups
        self._sorted = sorted(groups.values(), key=lambda g: (g.id.lower(), g.id))

    def get(self, group_id: str) -> ClientGroup | None:
        return self._groups.get(group_id)

    def all(self) -> list[ClientGroup]:
        """Every group, ordered by id (case-insensitive)."""
        return self._sorted

    async def create(self, group: ClientGroup) -> None:
        async with self._lock:
            if group.id in self._groups:
                raise GroupExists(group.id)
            await self._write(group)

    async def update(self, group: ClientGroup) -> None:
        """Create or replace."""
        async with self._lock:
            await self._write(group)

    async def delete(self, group_id: str) -> bool:
        async with self._lock:
            async with self.db.transaction() as tx:
                deleted = await tx.execute(
                    "DELETE FROM client_groups WHERE id = :id", {"id": group_id}
                )
                if deleted:
                    await self.changes.record(tx, self.dataset, group_id, None)
            self._set({k: v for k, v in self._groups.items() if k != group_id})
            return deleted > 0

    async def _write(self, group: ClientGroup) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(_UPSERT, _row(group))
            await self.changes.record(tx, self.dataset, group.id, group.document())
        self._set({**self._groups, group.id: group})

    # --- ReplicatedDataset ---------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        rows = await self.db.fetch_all("SELECT * FROM client_groups")
        return {str(r["id"]): ClientGroup.from_row(r).document() for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        async with self._lock:
            async with self.db.transaction() as tx:
                await self._put(tx, key, doc)
            groups = {k: v for k, v in self._groups.items() if k != key}
            if doc is not None:
                groups[key] = ClientGroup.from_document(doc)
            self._set(groups)

    async def restore(self, docs: dict[str, Document]) -> None:
        async with self._lock:
            async with self.db.transaction() as tx:
                await tx.execute("DELETE FROM client_groups")
                await tx.execute_many(
                    _UPSERT, [_row(ClientGroup.from_document(d)) for d in docs.values()]
                )
            await self.load()

    async def _put(self, tx: Transaction, key: str, doc: Document | None) -> None:
        await tx.execute("DELETE FROM client_groups WHERE id = :id", {"id": key})
        if doc is not None:
            await tx.execute(_UPSERT, _row(ClientGroup.from_document(doc)))
