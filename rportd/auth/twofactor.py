"""The second login step: a delivered code or a TOTP authenticator code (api.md §1.4).

Pending codes and TOTP login sessions live in memory per username, as upstream keeps them.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rportd.auth.accounts import AccountError
from rportd.auth.delivery import CodeMessage, CodeSender, DeliveryFailed
from rportd.auth.jwt import TOTP_SETUP_SCOPE, TWO_FA_SCOPES
from rportd.auth.totp import InvalidTotpSecret, stored_key
from rportd.auth.users import User

CODE_LENGTH = 6
TOTP_METHOD = "totp_authenticator_app"
_CODE_CHARS = string.digits + string.ascii_lowercase + string.ascii_uppercase


class TwoFactorError(AccountError):
    """A refused second step (status and title as upstream)."""


@dataclass
class Challenge:
    """What ``/login`` answers while the second step is pending."""

    send_to: str
    delivery_method: str
    totp_key_status: str
    scopes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, str]:
        return {
            "send_to": self.send_to,
            "delivery_method": self.delivery_method,
            "totp_key_status": self.totp_key_status,
        }


class TwoFactorService:
    """Delivered codes (``sender``) or TOTP (``totp``); exactly one of them."""

    def __init__(
        self,
        *,
        sender: CodeSender | None = None,
        totp: bool = False,
        code_ttl: float = 600.0,
        send_timeout: float = 10.0,
        totp_session_ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.totp = totp
        self.code_ttl = code_ttl
        self.send_timeout = send_timeout
        self.totp_session_ttl = totp_session_ttl
        self._clock = clock
        self._pending: dict[str, tuple[str, float]] = {}

    @property
    def delivery_method(self) -> str:
        if self.totp:
            return TOTP_METHOD
        return self.sender.delivery_method if self.sender else ""

    def _remember(self, username: str, code: str, ttl: float) -> None:
        now = self._clock()
        for name in [n for n, (_, exp) in self._pending.items() if exp < now]:
            del self._pending[name]
        self._pending[username] = (code, now + ttl)

    async def start(self, user: User, user_agent: str, ip: str) -> Challenge:
        """Begin the second step for a user whose password was right."""
        if self.totp:
            try:
                key = stored_key(user.totp_secret)
            except InvalidTotpSecret as exc:
                raise TwoFactorError(500, f"failed to read TotP secret: {exc}") from None
            self._remember(user.username, "", self.totp_session_ttl)
            scopes = list(TWO_FA_SCOPES)
            if key is None:
                scopes.append(TOTP_SETUP_SCOPE)
            status = "exists" if key is not None else "pending"
            return Challenge("", TOTP_METHOD, status, scopes)
        assert self.sender is not None
        if not user.two_fa_send_to:
            raise TwoFactorError(400, "no two_fa_send_to set for this user")
        code = "".join(secrets.choice(_CODE_CHARS) for _ in range(CODE_LENGTH))
        message = CodeMessage(
            send_to=user.two_fa_send_to,
            code=code,
            ttl_seconds=int(self.code_ttl),
            user_agent=user_agent,
            remote_address=ip,
        )
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.sender.send(message)
        except TimeoutError:
            raise TwoFactorError(
                500, "failed to send 2fa verification code: context deadline exceeded"
            ) from None
        except DeliveryFailed as exc:
            raise TwoFactorError(500, f"failed to send 2fa verification code: {exc}") from None
        self._remember(user.username, code, self.code_ttl)
        return Challenge(user.two_fa_send_to, self.sender.delivery_method, "", list(TWO_FA_SCOPES))

    def verify(self, user: User, code: str) -> None:
        """Accept ``code`` for ``user`` (once) or raise :class:`TwoFactorError`."""
        pending = self._pending.get(user.username)
        if self.totp:
            if pending is None:
                raise TwoFactorError(401, "login request not found for provided username")
            if self._clock() > pending[1]:
                raise TwoFactorError(401, "login request expired")
            try:
                key = stored_key(user.totp_secret)
            except InvalidTotpSecret as exc:
                raise TwoFactorError(500, str(exc)) from None
            if key is None:
                raise TwoFactorError(
                    409, "time based one time secret key should be generated for this user"
                )
            if not key.check(code):
                raise TwoFactorError(401, "invalid code")
        else:
            if pending is None:
                raise TwoFactorError(401, "2fa token not found for provided username")
            if self._clock() > pending[1]:
                raise TwoFactorError(401, "2fa token expired")
            if not hmac.compare_digest(pending[0].encode(), code.encode()):
                raise TwoFactorError(401, "invalid token")
        self._pending.pop(user.username, None)
