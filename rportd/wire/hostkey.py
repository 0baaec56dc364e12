"""Server host key derived from ``key_seed`` exactly as upstream derives it.

Clients pin the MD5 fingerprint of this key, so the derivation must match
upstream bit for bit (protocol.md §3.3).
"""

from __future__ import annotations

import hashlib
import struct

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def deterministic_bytes(seed: bytes, length: int) -> bytes:
    """Return ``length`` bytes of upstream's SHA-512 based deterministic stream."""
    state = seed
    for _ in range(2048):
        state = hashlib.sha512(state).digest()[:32]
    out = bytearray()
    while len(out) < length:
        block = hashlib.sha512(state).digest()
        state = block[:32]
        out += block[32:]
    return bytes(out[:length])


def private_key_from_seed(seed: str) -> ec.EllipticCurvePrivateKey:
    """Derive the ECDSA P-256 key of ``seed`` (Go 1.19 ``ecdsa.GenerateKey`` rule)."""
    material = deterministic_bytes(seed.encode(), 256 // 8 + 8)
    scalar = int.from_bytes(material, "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A random P-256 key, used when no ``key_seed`` is configured."""
    return ec.generate_private_key(ec.SECP256R1())


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def public_key_blob(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The SSH wire encoding of the public key."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _ssh_string(b"ecdsa-sha2-nistp256") + _ssh_string(b"nistp256") + _ssh_string(point)


def fingerprint(key: ec.EllipticCurvePrivateKey) -> str:
    """Legacy MD5 fingerprint as clients pin it: ``aa:bb:...`` without prefix."""
    digest = hashlib.md5(public_key_blob(key), usedforsecurity=False).digest()
    return ":".join(f"{b:02x}" for b in digest)


def to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """SEC1 ``EC PRIVATE KEY`` PEM, as upstream serialises it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def to_asyncssh(key: ec.EllipticCurvePrivateKey) -> asyncssh.SSHKey:
    """The key as an asyncssh host key."""
    return asyncssh.import_private_key(to_pem(key))


class HostKey:
    """The server's single host key and its fingerprint."""

    def __init__(self, seed: str = "") -> None:
        self.private_key = private_key_from_seed(seed) if seed else generate_private_key()
        self.fingerprint = fingerprint(self.private_key)
        self.ssh_key = to_asyncssh(self.private_key)
