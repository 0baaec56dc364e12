"""Password hashing and checking as upstream does it (bcrypt ``$2y$`` or plain text)."""

from __future__ import annotations

import asyncio
import hmac

import bcrypt


def is_bcrypt(stored: str) -> bool:
    """Upstream treats only ``$2y$`` values as hashes; anything else is plain text."""
    return stored.startswith("$2y$")


def _check(stored: str, given: str) -> bool:
    if is_bcrypt(stored):
        try:
            return bcrypt.checkpw(given.encode(), ("$2b$" + stored[4:]).encode())
        except ValueError:
            return False
    return hmac.compare_digest(stored.encode(), given.encode())


async def verify_password(stored: str, given: str) -> bool:
    """Check ``given`` against a stored password; bcrypt runs in a thread."""
    if is_bcrypt(stored):
        return await asyncio.to_thread(_check, stored, given)
    return _check(stored, given)


def _hash(password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return "$2y$" + hashed[4:]


async def hash_password(password: str) -> str:
    """A ``$2y$`` bcrypt hash (default cost 10, as Go's bcrypt), computed in a thread."""
    return await asyncio.to_thread(_hash, password)
