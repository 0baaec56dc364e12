"""Which clients a user may see and act on (api.md §1.7)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from rportd.clients.model import Client


class UserLike(Protocol):
    @property
    def is_admin(self) -> bool: ...

    @property
    def groups(self) -> list[str]: ...


class ClientGroupLike(Protocol):
    """A client group as access checks need it."""

    @property
    def id(self) -> str: ...

    @property
    def allowed_user_groups(self) -> list[str]: ...

    def matches(self, client: Client) -> bool: ...


class ClientAccess:
    """Client ACLs and client-group ACLs applied to users."""

    def __init__(self, groups: Callable[[], Iterable[ClientGroupLike]] = lambda: ()) -> None:
        self._groups = groups

    def groups_of(self, client: Client) -> list[str]:
        """Ids of the client groups ``client`` belongs to."""
        return [g.id for g in self._groups() if g.matches(client)]

    def can_access(self, user: UserLike, client: Client) -> bool:
        if user.is_admin:
            return True
        mine = set(user.groups)
        if mine & set(client.allowed_user_groups or ()):
            return True
        return any(mine & set(g.allowed_user_groups) and g.matches(client) for g in self._groups())
