"""Changes to API accounts that need policy: passwords, expiry, sessions, renames."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from rportd.auth.passwords import hash_password, verify_password
from rportd.auth.sessions import ApiSessionStore
from rportd.auth.users import ADMIN_GROUP, User, UsersReadOnly, UserStore

if TYPE_CHECKING:
    from rportd.auth.tokens import ApiTokenStore

ReceiverCheck = Callable[[str], Awaitable[None]]
"""Raises ``ValueError`` (message = why) when a ``two_fa_send_to`` cannot receive codes."""

ALREADY_EXISTS = "Another user with this username already exists"
NOTHING_TO_CHANGE = "nothing to change"
MAX_PASSWORD_BYTES = 72
STATIC_USER_OPERATION = "The single user authentication doesn't support this operation."


class AccountError(Exception):
    """An account change refused; ``items`` are ``(title, detail)`` as upstream words them."""

    def __init__(
        self, status: int, title: str, detail: str = "", *, more: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.items: list[tuple[str, str]] = [(title, detail), *more]

    @classmethod
    def of(cls, status: int, items: Sequence[tuple[str, str]]) -> AccountError:
        return cls(status, items[0][0], items[0][1], more=items[1:])


class PasswordRejected(AccountError):
    """A new password breaks the policy (400)."""

    def __init__(self, title: str, detail: str = "") -> None:
        super().__init__(400, title, detail)


@dataclass
class UserChange:
    """A create or update request; empty / ``None`` values leave a field as it is."""

    username: str = ""
    password: str = ""
    password_expired: bool | None = None
    groups: list[str] | None = None
    two_fa_send_to: str = ""
    totp_secret: str | None = None  # "" removes the secret


def _zxcvbn_score(password: str, user_inputs: list[str]) -> int:
    import zxcvbn

    result = zxcvbn.zxcvbn(password, user_inputs=user_inputs, max_length=MAX_PASSWORD_BYTES)
    return int(result["score"])


class AccountService:
    """Password policy and account changes on the configured user source."""

    def __init__(
        self,
        users: UserStore,
        sessions: ApiSessionStore | None,
        *,
        password_min_length: int = 14,
        zxcvbn_min_score: int = 0,
        two_fa_on: bool = False,
        receiver_check: ReceiverCheck | None = None,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.password_min_length = password_min_length
        self.zxcvbn_min_score = zxcvbn_min_score
        self.two_fa_on = two_fa_on
        self.receiver_check = receiver_check
        self.tokens: ApiTokenStore | None = None
        self.keep_an_administrator = True
        """Refuse API changes that leave no administrator (the CLI on the server may)."""

    # --- policy ------------------------------------------------------------------

    async def password_problems(
        self, password: str, user_inputs: list[str]
    ) -> list[tuple[str, str]]:
        """What is wrong with ``password`` under ``[api]`` policy (empty: nothing)."""
        problems: list[tuple[str, str]] = []
        if len(password) < self.password_min_length:
            problems.append(
                (
                    "Your password is too short",
                    f"password must be at least {self.password_min_length} characters",
                )
            )
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            # bcrypt reads no more than this; refuse rather than silently cut.
            problems.append(
                (
                    "Your password is too long",
                    f"password must be at most {MAX_PASSWORD_BYTES} bytes",
                )
            )
        elif self.zxcvbn_min_score >= 0:
            score = await asyncio.to_thread(_zxcvbn_score, password, user_inputs)
            if score < self.zxcvbn_min_score:
                problems.append(
                    (
                        "Your password is too guessable",
                        f"zxcvbn score is {score}, must be at least {self.zxcvbn_min_score}",
                    )
                )
        return problems

    async def check_policy(self, password: str, user_inputs: Sequence[str] = ()) -> None:
        """Raise :class:`AccountError` (400) unless ``password`` meets the policy."""
        problems = await self.password_problems(password, list(user_inputs))
        if problems:
            raise AccountError.of(400, problems)

    async def _validate(self, change: UserChange, existing_name: str) -> None:
        problems: list[tuple[str, str]] = []
        inputs: list[str] = []
        if not existing_name:
            if not change.username:
                problems.append(("username is required", ""))
            if not change.password:
                problems.append(("password is required", ""))
            if self.two_fa_on and not change.two_fa_send_to:
                problems.append(("two_fa_send_to is required", ""))
        else:
            inputs.append(existing_name)
            if (
                change.username in ("", existing_name)
                and not change.password
                and change.password_expired is None
                and change.groups is None
                and (not self.two_fa_on or not change.two_fa_send_to)
                and change.totp_secret is None
            ):
                problems.append((NOTHING_TO_CHANGE, ""))
        if change.username:
            inputs.append(change.username)
            if change.username.strip() != change.username:
                problems.append(("username must not start or end with whitespace", ""))
        if change.password:
            problems.extend(await self.password_problems(change.password, inputs))
        if change.two_fa_send_to and self.receiver_check is not None:
            try:
                await self.receiver_check(change.two_fa_send_to)
            except ValueError as exc:
                problems.append((f"invalid two_fa_send_to: {exc}", ""))
        if problems:
            raise AccountError.of(400, problems)

    # --- changes -----------------------------------------------------------------

    async def create_user(self, change: UserChange) -> User:
        """Add a user (upstream's ``POST /users`` rules)."""
        await self._validate(change, "")
        if await self.users.get(change.username) is not None:
            raise AccountError(400, ALREADY_EXISTS)
        user = User(
            username=change.username,
            password=await hash_password(change.password),
            groups=list(dict.fromkeys(change.groups or [])),
            two_fa_send_to=change.two_fa_send_to,
            totp_secret=change.totp_secret or "",
            password_expired=bool(change.password_expired),
        )
        try:
            await self.users.add(user)
        except UsersReadOnly:
            raise AccountError(400, STATIC_USER_OPERATION) from None
        return user

    async def update_user(self, username: str, change: UserChange) -> User:
        """Change ``username`` (any subset of fields; may rename)."""
        await self._validate(change, username)
        existing = await self.users.get(username)
        if existing is None:
            raise AccountError(404, f"cannot find user by username '{username}'")
        new_name = change.username or username
        if new_name != username and await self.users.get(new_name) is not None:
            raise AccountError(400, ALREADY_EXISTS)
        updated = replace(existing, username=new_name, groups=list(existing.groups))
        if change.password:
            updated.password = await hash_password(change.password)
            updated.password_expired = False
        if change.password_expired is not None:
            updated.password_expired = change.password_expired
        if change.groups is not None:
            updated.groups = list(dict.fromkeys(change.groups))
            if existing.is_admin and not updated.is_admin:
                await self._keep_an_administrator(username)
        if change.two_fa_send_to:
            updated.two_fa_send_to = change.two_fa_send_to
        if change.totp_secret is not None:
            updated.totp_secret = change.totp_secret
        try:
            await self.users.update(username, updated)
        except UsersReadOnly:
            raise AccountError(400, STATIC_USER_OPERATION) from None
        if change.password_expired and self.sessions is not None:
            await self.sessions.delete_for(username)
        if new_name != username and self.tokens is not None:
            await self.tokens.rename_user(username, new_name)
        return updated

    async def _keep_an_administrator(self, leaving: str) -> None:
        """Refuse a change that would leave no user in the Administrators group."""
        if not self.keep_an_administrator:
            return
        others = [u for u in await self.users.list_users() if u.is_admin and u.username != leaving]
        if not others:
            raise AccountError(
                400,
                f"'{leaving}' is the last member of {ADMIN_GROUP}",
                f"add another user to {ADMIN_GROUP} first, or nobody can manage users any more",
            )

    async def delete_user(self, username: str) -> None:
        """Remove a user, their API tokens and sessions."""
        user = await self.users.get(username)
        if user is None:
            raise AccountError(404, f"cannot find user by username '{username}'")
        if user.is_admin:
            await self._keep_an_administrator(username)
        try:
            await self.users.delete(username)
        except UsersReadOnly:
            raise AccountError(400, STATIC_USER_OPERATION) from None
        if self.tokens is not None:
            await self.tokens.delete_for(username)
        if self.sessions is not None:
            await self.sessions.delete_for(username)

    async def change_password(self, user: User, new_password: str) -> User:
        """Set a new (policy-checked) password and clear its expiry (``/login``)."""
        return await self.update_user(
            user.username, UserChange(password=new_password, password_expired=False)
        )

    async def change_me(
        self,
        user: User,
        *,
        username: str = "",
        password: str = "",
        old_password: str = "",
        two_fa_send_to: str = "",
    ) -> User:
        """``PUT /me``: a new password needs the current one; a wrong one given refuses all."""
        if password and not old_password:
            raise AccountError(403, "Missing old password.")
        if old_password and not await verify_password(user.password, old_password):
            raise AccountError(403, "Incorrect old password.")
        return await self.update_user(
            user.username,
            UserChange(username=username, password=password, two_fa_send_to=two_fa_send_to),
        )
