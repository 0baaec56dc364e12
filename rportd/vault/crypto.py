"""Upstream's vault encryption: AES-256-GCM with the SHA-256 of the vault password as key.

An encrypted value is ``base64(12-byte nonce || ciphertext || 16-byte tag)`` (standard
base64 with padding), the format upstream writes into ``vault.sqlite.db``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
MIN_PASSWORD_BYTES = 4
MAX_PASSWORD_BYTES = 32


class DecryptionFailed(Exception):
    """The text is not a value encrypted with this key; the message says why (Go's words)."""


def vault_key(password: str) -> bytes:
    """The AES-256 key of a vault password."""
    return hashlib.sha256(password.encode()).digest()


def encrypt(key: bytes, plaintext: bytes) -> str:
    """``plaintext`` encrypted with a fresh random nonce, as upstream stores it."""
    nonce = os.urandom(NONCE_SIZE)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, None)).decode()


def decrypt(key: bytes, encrypted: str) -> bytes:
    """The plaintext of an upstream-encrypted value; :class:`DecryptionFailed` otherwise."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptionFailed(f"illegal base64 data: {exc}") from None
    if len(raw) <= NONCE_SIZE:
        raise DecryptionFailed("invalid encrypted value provided: invalid nonce length")
    try:
        return AESGCM(key).decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], None)
    except InvalidTag:
        raise DecryptionFailed("cipher: message authentication failed") from None


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be a vault password (upstream's text), or None."""
    size = len(password.encode())
    if size < MIN_PASSWORD_BYTES:
        return (
            f"password is too short, expected length is {MIN_PASSWORD_BYTES} bytes, "
            f"provided length is {size} bytes"
        )
    if size > MAX_PASSWORD_BYTES:
        return (
            f"password is too long, expected length is {MAX_PASSWORD_BYTES} bytes, "
            f"provided length is {size} bytes"
        )
    return None


def new_check_pair(key: bytes) -> tuple[str, bytes]:
    """A random check value encrypted with ``key`` (``enc_check``) and in clear (``dec_check``).

    Unlocking succeeds when ``enc_check`` decrypts, as upstream checks it.
    """
    clear = secrets.token_hex(32).encode()
    return encrypt(key, clear), clear
