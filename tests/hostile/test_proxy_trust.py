"""Which address is the client's, given the peer and ``X-Forwarded-For``."""

from __future__ import annotations

from rportd.httputil import ProxyTrust


def test_the_header_counts_only_from_a_trusted_proxy() -> None:
    nobody = ProxyTrust()
    assert nobody.client_of("198.51.100.7", "203.0.113.1") == "198.51.100.7"
    proxies = ProxyTrust(["10.0.0.0/8", "192.0.2.1"])
    assert proxies.client_of("198.51.100.7", "203.0.113.1") == "198.51.100.7"
    assert proxies.client_of("10.1.2.3", "203.0.113.1") == "203.0.113.1"
    assert proxies.client_of("10.1.2.3", "") == "10.1.2.3"


def test_the_client_is_the_first_untrusted_hop_from_the_right() -> None:
    proxies = ProxyTrust(["10.0.0.0/8", "192.0.2.1"])
    # What the client claimed itself (leftmost) is not believed past an untrusted hop.
    assert proxies.client_of("10.0.0.1", "1.1.1.1, 203.0.113.9, 192.0.2.1") == "203.0.113.9"
    # Garbage stops the walk at the last good address.
    assert proxies.client_of("10.0.0.1", "203.0.113.9, not-an-ip") == "10.0.0.1"
    assert proxies.client_of("10.0.0.1", "not-an-ip, 192.0.2.1") == "192.0.2.1"
