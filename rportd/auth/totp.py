"""TOTP secrets: generation, the ``otpauth://`` URL stored in the user record, QR PNG, checks."""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pyotp

QR_SIZE = 200
_DIGESTS: dict[str, Callable[..., Any]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
    "MD5": hashlib.md5,
}


class InvalidTotpSecret(ValueError):
    """The stored ``totp_secret`` is not a usable ``otpauth://totp/`` URL."""


@dataclass(frozen=True)
class TotpKey:
    """A TOTP key as upstream stores it (``otpauth://totp/<issuer>:<account>?...``)."""

    secret: str
    issuer: str = ""
    account: str = ""
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30

    @classmethod
    def generate(cls, issuer: str, account: str) -> TotpKey:
        """A new key: 20 random bytes, SHA1, 6 digits, 30 s (upstream's defaults)."""
        secret = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
        return cls(secret=secret, issuer=issuer, account=account)

    @property
    def url(self) -> str:
        """The key URL in the layout Go's otp package writes (sorted query keys)."""
        query = urlencode(
            {
                "algorithm": self.algorithm,
                "digits": str(self.digits),
                "issuer": self.issuer,
                "period": str(self.period),
                "secret": self.secret,
            },
            quote_via=quote,
        )
        label = quote(f"{self.issuer}:{self.account}", safe=":@")
        return f"otpauth://totp/{label}?{query}"

    @classmethod
    def from_url(cls, url: str) -> TotpKey:
        """Parse a stored key URL; raise :class:`InvalidTotpSecret` if unusable."""
        parts = urlsplit(url.strip())
        if parts.scheme != "otpauth":
            raise InvalidTotpSecret(f"unexpected totp key scheme {parts.scheme}, otpauth expected")
        if parts.netloc != "totp":
            raise InvalidTotpSecret(f"invalid totp key type {parts.netloc}, totp expected")
        query = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
        secret = query.get("secret", "").strip()
        if not secret:
            raise InvalidTotpSecret("empty totp secret key")
        algorithm = query.get("algorithm", "SHA1").upper()
        if algorithm not in _DIGESTS:
            raise InvalidTotpSecret(f"invalid/unsupported algorithm value {algorithm}")
        try:
            digits = int(query.get("digits", "6"))
            period = int(query.get("period", "30"))
        except ValueError:
            raise InvalidTotpSecret("invalid digits or period value") from None
        if digits not in (6, 8) or period <= 0:
            raise InvalidTotpSecret("invalid digits or period value")
        label = parts.path.lstrip("/")
        issuer, _, account = label.partition(":")
        return cls(
            secret=secret,
            issuer=query.get("issuer", issuer),
            account=account,
            algorithm=algorithm,
            digits=digits,
            period=period,
        )

    def _otp(self) -> pyotp.TOTP:
        return pyotp.TOTP(
            self.secret, digits=self.digits, digest=_DIGESTS[self.algorithm], interval=self.period
        )

    def now(self) -> str:
        """The current code (tests and tools)."""
        return self._otp().now()

    def check(self, code: str) -> bool:
        """Whether ``code`` is valid now, allowing one period of clock skew either way."""
        try:
            return bool(self._otp().verify(code.strip(), valid_window=1))
        except Exception:
            return False

    def qr_png_base64(self) -> str:
        """A PNG QR code of :attr:`url` (about 200x200 pixels), base64-encoded."""
        import segno

        qr = segno.make(self.url, error="m", micro=False)
        width = qr.symbol_size(scale=1, border=4)[0]
        buf = io.BytesIO()
        qr.save(buf, kind="png", scale=max(1, QR_SIZE // width), border=4)
        return base64.b64encode(buf.getvalue()).decode()

    def to_api(self) -> dict[str, str]:
        """The bare ``/me/totp-secret`` answer."""
        return {"secret": self.secret, "qr": self.qr_png_base64()}


def stored_key(totp_secret: str) -> TotpKey | None:
    """The key in a user's ``totp_secret`` (``None`` if none; blank counts as none)."""
    if not totp_secret.strip():
        return None
    return TotpKey.from_url(totp_secret)
