"""Changes to API accounts that need policy: passwords, expiry, sessions."""

from __future__ import annotations

from dataclasses import replace

from rportd.auth.passwords import hash_password
from rportd.auth.sessions import ApiSessionStore
from rportd.auth.users import User, UserStore


class PasswordRejected(Exception):
    """A new password breaks the policy; ``title``/``detail`` as upstream words them."""

    def __init__(self, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail


class AccountService:
    """Password policy and account changes on the configured user source."""

    def __init__(
        self,
        users: UserStore,
        sessions: ApiSessionStore | None,
        *,
        password_min_length: int = 14,
        zxcvbn_min_score: int = 0,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.password_min_length = password_min_length
        self.zxcvbn_min_score = zxcvbn_min_score

    def check_policy(self, password: str) -> None:
        """Raise :class:`PasswordRejected` unless ``password`` meets ``[api]`` policy."""
        if len(password) < self.password_min_length:
            raise PasswordRejected(
                "Your password is too short",
                f"password must be at least {self.password_min_length} characters",
            )

    async def change_password(self, user: User, new_password: str) -> User:
        """Set a new (policy-checked) password and clear its expiry."""
        self.check_policy(new_password)
        updated = replace(user, password=await hash_password(new_password), password_expired=False)
        await self.users.update(user.username, updated)
        return updated
