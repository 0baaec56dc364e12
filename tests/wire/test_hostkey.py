"""The host key derived from key_seed matches upstream's (protocol.md §3.3 vectors)."""

from __future__ import annotations

import pytest

from rportd.wire.hostkey import HostKey, fingerprint, private_key_from_seed, to_pem

VECTORS = [
    (
        "Z4mQqmkDnexNNR4giNU3Me",
        0x4195F5C61B825289A9AA9158B53923C456D94ADCE249EC5A99DF979E0DE4F78B,
        "5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:11",
    ),
    (
        "my-secret-seed",
        0x66C04E2F6AB4B2540CE777916B0F0886FCC3FAB2F16F69CFDC847E84954812EE,
        "84:ce:1b:f0:55:88:76:05:e2:ac:f8:b2:64:eb:55:82",
    ),
]

UPSTREAM_PEM = b"""-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIEGV9cYbglKJqaqRWLU5I8RW2Urc4knsWpnfl54N5PeLoAoGCCqGSM49
AwEHoUQDQgAEM4X+JcCAAGUcAS/cfQ5iF8evBjwpJDhgbJZ/lQYcA6JX34WkjI4N
almivx1pS7D4tq7M2u6JKDK6Ff7kjWxBZQ==
-----END EC PRIVATE KEY-----
"""


@pytest.mark.parametrize(("seed", "scalar", "expected"), VECTORS)
def test_seed_gives_upstream_key_and_fingerprint(seed: str, scalar: int, expected: str) -> None:
    key = private_key_from_seed(seed)
    assert key.private_numbers().private_value == scalar
    assert fingerprint(key) == expected
    assert HostKey(seed).fingerprint == expected


def test_pem_equals_upstream_unit_test_value() -> None:
    assert to_pem(private_key_from_seed("Z4mQqmkDnexNNR4giNU3Me")) == UPSTREAM_PEM


def test_without_seed_every_start_gets_a_new_key() -> None:
    assert HostKey("").fingerprint != HostKey("").fingerprint
