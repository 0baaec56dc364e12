"""API users: the single ``[api] auth`` user, a JSON ``auth_file`` or DB tables."""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from rportd.store.changes import NULL_SINK, ChangeSink, Document, SecondDataset
from rportd.store.database import SqlDatabase, Transaction
from rportd.store.files import atomic_write_text

log = logging.getLogger(__name__)

ADMIN_GROUP = "Administrators"
RESTRICTED = ("tunnels_restricted", "commands_restricted")

PERMISSIONS = (
    "tunnels",
    "scripts",
    "commands",
    "vault",
    "scheduler",
    "monitoring",
    "uploads",
    "auditlog",
)

SOURCE_STATIC = "Static Credentials"
SOURCE_FILE = "File"
SOURCE_DB = "DB"


class UserExists(Exception):
    """Another user with this username already exists."""


class UserNotFound(Exception):
    """No such user."""


class UsersReadOnly(Exception):
    """The user source cannot be changed through the API."""


@dataclass
class User:
    """An API user as stored (``password`` is a ``$2y$`` hash or plain text)."""

    username: str
    password: str
    groups: list[str] = field(default_factory=list)
    two_fa_send_to: str = ""
    totp_secret: str = ""
    password_expired: bool = False

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups


@dataclass
class UserGroup:
    """A user group and its function permissions."""

    name: str
    permissions: dict[str, bool] = field(default_factory=dict)
    tunnels_restricted: Any = None
    commands_restricted: Any = None

    def to_json(self) -> dict[str, Any]:
        full = self.name == ADMIN_GROUP
        return {
            "name": self.name,
            "permissions": {  # a Go map: keys sorted
                p: full or bool(self.permissions.get(p)) for p in sorted(PERMISSIONS)
            },
            "tunnels_restricted": self.tunnels_restricted,
            "commands_restricted": self.commands_restricted,
        }


def user_document(user: User) -> Document:
    """A user as a replicated document."""
    return {
        "username": user.username,
        "password": user.password,
        "groups": list(user.groups),
        "two_fa_send_to": user.two_fa_send_to,
        "totp_secret": user.totp_secret,
        "password_expired": user.password_expired,
    }


def user_from_document(doc: Document) -> User:
    return User(
        username=str(doc["username"]),
        password=str(doc["password"]),
        groups=[str(g) for g in doc.get("groups") or []],
        two_fa_send_to=str(doc.get("two_fa_send_to") or ""),
        totp_secret=str(doc.get("totp_secret") or ""),
        password_expired=bool(doc.get("password_expired")),
    )


def _restricted(raw: Any) -> Any:
    """A stored ``*_restricted`` value: NULL stays null, JSON text is decoded."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _permissions(raw: Any) -> dict[str, bool]:
    """A ``permissions`` column (JSON text; bytes from some MySQL column types)."""
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return {str(k): bool(v) for k, v in value.items()} if isinstance(value, dict) else {}


class UserStore(ABC):
    """Where API users come from.

    Writable sources are replicated: dataset ``api_users`` (documents by
    username) and, with group details, ``api_user_groups`` (by group name).
    """

    source: str
    writable: bool = True
    group_permissions_enabled: bool = False
    dataset = "api_users"
    groups_dataset = "api_user_groups"
    changes: ChangeSink = NULL_SINK

    async def _recorded(
        self, tx: Transaction | None, old_name: str | None, user: User | None
    ) -> None:
        """Record a user change (a rename is a delete plus an upsert)."""
        if old_name is not None and (user is None or user.username != old_name):
            await self.changes.record(tx, self.dataset, old_name, None)
        if user is not None:
            await self.changes.record(tx, self.dataset, user.username, user_document(user))

    async def put_user(self, username: str, user: User | None) -> None:
        """Set or remove a user without recording a change (replication)."""
        raise UsersReadOnly(self.source)

    async def snapshot(self) -> dict[str, Document]:
        return {u.username: user_document(u) for u in await self.list_users()}

    async def apply(self, key: str, doc: Document | None) -> None:
        await self.put_user(key, None if doc is None else user_from_document(doc))

    async def restore(self, docs: dict[str, Document]) -> None:
        current = {u.username for u in await self.list_users()}
        for name in current - set(docs):
            await self.put_user(name, None)
        for name, doc in docs.items():
            await self.put_user(name, user_from_document(doc))

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Read the source at start (and on SIGUSR1 for files)."""

    @abstractmethod
    async def get(self, username: str) -> User | None: ...

    @abstractmethod
    async def list_users(self) -> list[User]: ...

    async def add(self, user: User) -> None:
        raise UsersReadOnly(self.source)

    async def update(self, username: str, user: User) -> None:
        """Replace ``username``'s record with ``user`` (which may rename it)."""
        raise UsersReadOnly(self.source)

    async def delete(self, username: str) -> None:
        raise UsersReadOnly(self.source)

    async def groups(self) -> list[UserGroup]:
        """Known groups with permissions (DB with a details table only)."""
        return []

    async def get_group(self, name: str) -> UserGroup | None:
        for group in await self.groups():
            if group.name == name:
                return group
        return None

    async def put_group(self, group: UserGroup) -> None:
        raise UsersReadOnly(self.source)

    async def delete_group(self, name: str) -> None:
        raise UsersReadOnly(self.source)

    async def permission_groups(self) -> list[UserGroup]:
        """The groups that may carry permissions (every group, unless a store knows better)."""
        return await self.groups()

    async def extended_permissions(self, user: User) -> dict[str, list[Any] | None]:
        """``tunnels_restricted`` / ``commands_restricted`` of the user's groups that have
        them (upstream's ``effective_extended_permissions``; null when none has)."""
        if not self.group_permissions_enabled:
            return dict.fromkeys(RESTRICTED)
        groups = {g.name: g for g in await self.permission_groups()}
        mine = [groups[name] for name in user.groups if name in groups]
        result: dict[str, list[Any] | None] = {}
        for key in RESTRICTED:
            values = [getattr(g, key) for g in mine if getattr(g, key) is not None]
            result[key] = values or None
        return result

    async def effective_permissions(self, user: User) -> dict[str, bool]:
        """OR of the user's groups' permissions; all true without group permissions.

        Keys sorted, as Go marshals the map (the web UI lists them in that order).
        """
        if not self.group_permissions_enabled or user.is_admin:
            return dict.fromkeys(sorted(PERMISSIONS), True)
        result = dict.fromkeys(sorted(PERMISSIONS), False)
        for group in await self.permission_groups():
            if group.name in user.groups:
                for perm in PERMISSIONS:
                    result[perm] = result[perm] or bool(group.permissions.get(perm))
        return result


class StaticUserStore(UserStore):
    """``[api] auth = "user:password"``: one administrator, read-only."""

    source = SOURCE_STATIC
    writable = False

    def __init__(self, pair: str) -> None:
        username, _, password = pair.partition(":")
        self._user = User(username, password, [ADMIN_GROUP])

    async def get(self, username: str) -> User | None:
        return replace(self._user) if username == self._user.username else None

    async def list_users(self) -> list[User]:
        return [replace(self._user)]


def _user_from_json(obj: Any, path: Path) -> User:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: every entry must be a JSON object")
    username = obj.get("username")
    password = obj.get("password")
    if not isinstance(username, str) or not username:
        raise ValueError(f"{path}: every user needs a non-empty 'username'")
    if not isinstance(password, str) or not password.startswith("$2y$"):
        raise ValueError(
            f"{path}: password of {username!r} must be a bcrypt hash starting with $2y$ "
            "(htpasswd -nbB style)"
        )
    groups = obj.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError(f"{path}: 'groups' of {username!r} must be a list of strings")
    return User(
        username=username,
        password=password,
        groups=list(groups),
        two_fa_send_to=str(obj.get("two_fa_send_to") or ""),
        totp_secret=str(obj.get("totp_secret") or ""),
        password_expired=obj.get("password_expired") is True,
    )


def _user_to_json(user: User) -> dict[str, Any]:
    out: dict[str, Any] = {
        "username": user.username,
        "password": user.password,
        "groups": user.groups,
    }
    if user.two_fa_send_to:
        out["two_fa_send_to"] = user.two_fa_send_to
    if user.totp_secret:
        out["totp_secret"] = user.totp_secret
    if user.password_expired:
        out["password_expired"] = True
    return out


class FileUserStore(UserStore):
    """``[api] auth_file``: a JSON array of users, rewritten atomically."""

    source = SOURCE_FILE
    file_backed = True  # may change behind the change log (hand edits): see rportd.ha.mirror

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._users: dict[str, User] = {}
        self._lock = asyncio.Lock()

    @property
    def write_lock(self) -> asyncio.Lock:
        """Held while the file is rewritten and the change recorded."""
        return self._lock

    async def load(self) -> None:
        self._users = await asyncio.to_thread(self._read)

    def _read(self) -> dict[str, User]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            raise ValueError(f"API auth file {self.path} does not exist") from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"API auth file {self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise ValueError(f"API auth file {self.path} must hold a JSON array of users")
        users: dict[str, User] = {}
        for obj in data:
            user = _user_from_json(obj, self.path)
            if user.username in users:
                raise ValueError(f"{self.path}: username {user.username!r} appears twice")
            users[user.username] = user
        return users

    async def _write(self, users: dict[str, User]) -> None:
        text = json.dumps([_user_to_json(u) for u in users.values()], indent=1) + "\n"
        await asyncio.to_thread(atomic_write_text, self.path, text)
        self._users = users

    async def get(self, username: str) -> User | None:
        user = self._users.get(username)
        return replace(user, groups=list(user.groups)) if user else None

    async def list_users(self) -> list[User]:
        return [replace(u, groups=list(u.groups)) for u in self._users.values()]

    async def add(self, user: User) -> None:
        self.changes.ensure_writable(self.dataset)
        async with self._lock:
            if user.username in self._users:
                raise UserExists(user.username)
            await self._write({**self._users, user.username: user})
            await self._recorded(None, None, user)

    async def update(self, username: str, user: User) -> None:
        self.changes.ensure_writable(self.dataset)
        async with self._lock:
            if username not in self._users:
                raise UserNotFound(username)
            if user.username != username and user.username in self._users:
                raise UserExists(user.username)
            users = {(user.username if k == username else k): v for k, v in self._users.items()}
            users[user.username] = user
            await self._write(users)
            await self._recorded(None, username, user)

    async def delete(self, username: str) -> None:
        self.changes.ensure_writable(self.dataset)
        async with self._lock:
            if username not in self._users:
                raise UserNotFound(username)
            await self._write({k: v for k, v in self._users.items() if k != username})
            await self._recorded(None, username, None)

    async def put_user(self, username: str, user: User | None) -> None:
        async with self._lock:
            users = {k: v for k, v in self._users.items() if k != username}
            if user is not None:
                users[user.username] = user
            await self._write(users)


class DbUserStore(UserStore):
    """Users, memberships and (optionally) group details in ``[database]`` tables.

    The same statements serve SQLite, MySQL/MariaDB and PostgreSQL: names are
    quoted for the database at hand and a details row is replaced by a delete
    and an insert in one transaction (upstream's ``REPLACE INTO``).
    """

    source = SOURCE_DB

    def __init__(
        self,
        db: SqlDatabase,
        user_table: str,
        group_table: str,
        details_table: str = "",
        *,
        with_two_fa: bool = False,
        with_totp: bool = False,
    ) -> None:
        self.db = db
        self.users_t = db.quote(user_table)
        self.groups_t = db.quote(group_table)
        self.details_t = db.quote(details_table) if details_table else ""
        self.group_permissions_enabled = bool(details_table)
        self._with_two_fa = with_two_fa
        self._with_totp = with_totp
        self._details_columns = "name, permissions"
        group = db.quote("group")  # a reserved word in every engine
        self._select_user = f"SELECT {self._user_columns()} FROM {self.users_t} WHERE username = :u"
        self._select_groups = (
            f"SELECT {group} AS name FROM {self.groups_t} WHERE username = :u ORDER BY {group}"
        )
        self._select_memberships = (
            f"SELECT username, {group} AS name FROM {self.groups_t} ORDER BY {group}"
        )
        self._insert_membership = f"INSERT INTO {self.groups_t} (username, {group}) VALUES (:u, :g)"
        self._members = f"SELECT username FROM {self.groups_t} WHERE {group} = :n"
        self._delete_members = f"DELETE FROM {self.groups_t} WHERE {group} = :n"
        self._group_names = f"SELECT DISTINCT {group} AS name FROM {self.groups_t}"

    def _user_columns(self) -> str:
        cols = ["username", "password", "password_expired"]
        if self._with_two_fa:
            cols.append("two_fa_send_to")
        if self._with_totp:
            cols.append("totp_secret")
        return ", ".join(cols)

    async def load(self) -> None:
        """Refuse to start when a needed table or column is missing."""
        await self.db.fetch_all(f"SELECT {self._user_columns()} FROM {self.users_t} LIMIT 0")
        await self.db.fetch_all(f"{self._select_memberships} LIMIT 0")
        if self.details_t:
            await self.db.fetch_all(f"SELECT name, permissions FROM {self.details_t} LIMIT 0")
            try:  # upstream's optional (Plus) columns, shown as they are stored
                await self.db.fetch_all(
                    f"SELECT {', '.join(RESTRICTED)} FROM {self.details_t} LIMIT 0"
                )
            except Exception:
                self._details_columns = "name, permissions"
            else:
                self._details_columns = ", ".join(("name", "permissions", *RESTRICTED))

    def _detail_group(self, row: Any) -> UserGroup:
        group = UserGroup(str(row["name"]), _permissions(row["permissions"]))
        if RESTRICTED[0] in row:
            group.tunnels_restricted = _restricted(row["tunnels_restricted"])
            group.commands_restricted = _restricted(row["commands_restricted"])
        return group

    def _row_to_user(self, row: dict[str, Any], groups: list[str]) -> User:
        return User(
            username=str(row["username"]),
            password=str(row["password"]),
            groups=groups,
            two_fa_send_to=str(row.get("two_fa_send_to") or ""),
            totp_secret=str(row.get("totp_secret") or ""),
            password_expired=bool(row.get("password_expired")),
        )

    async def get(self, username: str) -> User | None:
        row = await self.db.fetch_one(self._select_user, {"u": username})
        if row is None:
            return None
        groups = await self.db.fetch_all(self._select_groups, {"u": username})
        return self._row_to_user(row, [str(g["name"]) for g in groups])

    async def _get_in(self, tx: Transaction, username: str) -> User | None:
        row = await tx.fetch_one(self._select_user, {"u": username})
        if row is None:
            return None
        groups = await tx.fetch_all(self._select_groups, {"u": username})
        return self._row_to_user(row, [str(g["name"]) for g in groups])

    async def list_users(self) -> list[User]:
        rows = await self.db.fetch_all(
            f"SELECT {self._user_columns()} FROM {self.users_t} ORDER BY username"
        )
        by_user: dict[str, list[str]] = {}
        for m in await self.db.fetch_all(self._select_memberships):
            by_user.setdefault(str(m["username"]), []).append(str(m["name"]))
        return [self._row_to_user(r, by_user.get(str(r["username"]), [])) for r in rows]

    def _user_values(self, user: User) -> dict[str, Any]:
        values: dict[str, Any] = {
            "username": user.username,
            "password": user.password,
            "password_expired": user.password_expired,
        }
        if self._with_two_fa:
            values["two_fa_send_to"] = user.two_fa_send_to
        if self._with_totp:
            values["totp_secret"] = user.totp_secret
        return values

    async def _insert(self, tx: Transaction, user: User) -> None:
        values = self._user_values(user)
        cols = ", ".join(values)
        params = ", ".join(f":{k}" for k in values)
        await tx.execute(f"INSERT INTO {self.users_t} ({cols}) VALUES ({params})", values)
        await self._insert_groups(tx, user)

    async def _insert_groups(self, tx: Transaction, user: User) -> None:
        await tx.execute_many(
            self._insert_membership,
            [{"u": user.username, "g": g} for g in dict.fromkeys(user.groups)],
        )

    async def add(self, user: User) -> None:
        if await self.get(user.username) is not None:
            raise UserExists(user.username)
        try:
            async with self.db.transaction() as tx:
                await self._insert(tx, user)
                await self._recorded(tx, None, user)
        except IntegrityError:
            raise UserExists(user.username) from None  # added meanwhile, elsewhere

    async def update(self, username: str, user: User) -> None:
        if await self.get(username) is None:
            raise UserNotFound(username)
        if user.username != username and await self.get(user.username) is not None:
            raise UserExists(user.username)
        values = self._user_values(user)
        sets = ", ".join(f"{k} = :{k}" for k in values)
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE {self.users_t} SET {sets} WHERE username = :old",
                {**values, "old": username},
            )
            await tx.execute(f"DELETE FROM {self.groups_t} WHERE username = :u", {"u": username})
            await self._insert_groups(tx, user)
            await self._recorded(tx, username, user)

    async def delete(self, username: str) -> None:
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                f"DELETE FROM {self.users_t} WHERE username = :u", {"u": username}
            )
            if not deleted:
                raise UserNotFound(username)
            await tx.execute(f"DELETE FROM {self.groups_t} WHERE username = :u", {"u": username})
            await self._recorded(tx, username, None)

    async def put_user(self, username: str, user: User | None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(f"DELETE FROM {self.users_t} WHERE username = :u", {"u": username})
            await tx.execute(f"DELETE FROM {self.groups_t} WHERE username = :u", {"u": username})
            if user is not None:
                await self._insert(tx, user)

    async def groups(self) -> list[UserGroup]:
        found = {g.name: g for g in await self.detail_groups()}
        for row in await self.db.fetch_all(self._group_names):
            found.setdefault(str(row["name"]), UserGroup(str(row["name"])))
        return sorted(found.values(), key=lambda g: g.name)

    async def permission_groups(self) -> list[UserGroup]:
        return await self.detail_groups()  # a group without a details row has no permissions

    async def detail_groups(self) -> list[UserGroup]:
        """Groups that have a details row (the replicated part)."""
        if not self.details_t:
            return []
        rows = await self.db.fetch_all(
            f"SELECT {self._details_columns} FROM {self.details_t} ORDER BY name"
        )
        return [self._detail_group(r) for r in rows]

    async def _replace_details(self, tx: Transaction, name: str, permissions: Any) -> None:
        await tx.execute(f"DELETE FROM {self.details_t} WHERE name = :n", {"n": name})
        if permissions is not None:
            await tx.execute(
                f"INSERT INTO {self.details_t} (name, permissions) VALUES (:n, :p)",
                {"n": name, "p": json.dumps(permissions)},
            )

    async def put_group_details(self, name: str, permissions: Any) -> None:
        """Set or remove a group's details row without recording a change."""
        if not self.details_t:
            return
        async with self.db.transaction() as tx:
            await self._replace_details(tx, name, permissions)

    async def put_group(self, group: UserGroup) -> None:
        if not self.details_t:
            raise UsersReadOnly("group details table not configured")
        async with self.db.transaction() as tx:
            await self._replace_details(tx, group.name, group.permissions)
            await self.changes.record(
                tx, self.groups_dataset, group.name, {"permissions": group.permissions}
            )

    async def delete_group(self, name: str) -> None:
        async with self.db.transaction() as tx:
            if self.details_t:
                await tx.execute(f"DELETE FROM {self.details_t} WHERE name = :n", {"n": name})
            members = await tx.fetch_all(self._members, {"n": name})
            await tx.execute(self._delete_members, {"n": name})
            await self.changes.record(tx, self.groups_dataset, name, None)
            for member in members:
                user = await self._get_in(tx, str(member["username"]))
                if user is not None:
                    await self._recorded(tx, user.username, user)


class UserGroupsDataset(SecondDataset[DbUserStore]):
    """The ``api_user_groups`` data set: group permissions of a DB user store."""

    dataset = "api_user_groups"

    async def snapshot(self) -> dict[str, Document]:
        return {g.name: {"permissions": g.permissions} for g in await self.store.detail_groups()}

    async def apply(self, key: str, doc: Document | None) -> None:
        await self.store.put_group_details(key, None if doc is None else doc.get("permissions"))

    async def restore(self, docs: dict[str, Document]) -> None:
        current = {g.name for g in await self.store.detail_groups()}
        for name in current - set(docs):
            await self.store.put_group_details(name, None)
        for name, doc in docs.items():
            await self.store.put_group_details(name, doc.get("permissions"))
