"""Bearer tokens: HS256 JWTs whose lifetime is held by the API session."""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass, field
from typing import Any

import jwt

ALL_SCOPES: list[dict[str, Any]] = [
    {"uri": "*", "method": "*"},
    {"uri": "/api/v1/verify-2fa", "method": "*", "exclude": True},
]
TWO_FA_SCOPES: list[dict[str, Any]] = [{"uri": "/api/v1/verify-2fa", "method": "POST"}]
TOTP_SETUP_SCOPE: dict[str, Any] = {"uri": "/api/v1/me/totp-secret", "method": "POST"}


class InvalidToken(Exception):
    """The bearer token cannot be trusted."""


@dataclass(frozen=True)
class TokenClaims:
    """What a bearer token says."""

    username: str
    session_id: int
    scopes: list[dict[str, Any]] = field(default_factory=list)

    def allows(self, path: str, method: str) -> bool:
        """Whether the scopes admit ``method path`` (no scopes: everything)."""
        if not self.scopes:
            return True
        path = path.rstrip("/") or "/"
        allowed = False
        for scope in self.scopes:
            uri = str(scope.get("uri", ""))
            meth = str(scope.get("method", ""))
            if (uri == "*" or uri.rstrip("/") == path) and meth in ("*", method):
                if scope.get("exclude"):
                    return False
                allowed = True
        return allowed


class TokenIssuer:
    """Signs and verifies bearer tokens with ``[api] jwt_secret``."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    @property
    def weak(self) -> bool:
        """Shorter than SHA-256's block-size recommendation (upstream accepts it)."""
        return len(self._secret.encode()) < 32

    def issue(self, username: str, session_id: int, scopes: list[dict[str, Any]]) -> str:
        claims = {
            "username": username,
            "sessionID": session_id,
            "scopes": scopes,
            "jti": str(secrets.randbits(63)),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> TokenClaims:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
                claims = jwt.decode(token, self._secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        username = claims.get("username")
        session_id = claims.get("sessionID")
        if not isinstance(username, str) or not username or not isinstance(session_id, int):
            raise InvalidToken("token lacks username or sessionID")
        scopes = claims.get("scopes")
        return TokenClaims(username, session_id, scopes if isinstance(scopes, list) else [])
