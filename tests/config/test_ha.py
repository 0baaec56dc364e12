"""The [ha] section (rportd's own)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rportd.config import ConfigError, HAConfig, load_config

WriteConf = Callable[[str], str]

BASE = '[server]\n  auth = "clientAuth1:1234"\n'


def _ha_error(ha: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"server": {"auth": "a:b"}, "ha": ha})
    return err.value


def test_without_ha_section_is_standalone_primary(write_conf: WriteConf) -> None:
    config = load_config(write_conf(BASE))
    assert config.ha == HAConfig()
    assert config.ha.enabled is False
    assert config.ha.is_primary


def test_primary_with_peers(write_conf: WriteConf) -> None:
    path = write_conf(
        BASE
        + """
[ha]
  role = "primary"
  cluster_secret = "s3cret"
  peers = ["https://node2.example.com:3000", "http://10.0.0.3:3000"]
  takeover_after = "1m30s"
"""
    )
    ha = load_config(path).ha
    assert ha.role == "primary"
    assert ha.peers == ["https://node2.example.com:3000", "http://10.0.0.3:3000"]
    assert ha.takeover_after == 90.0
    assert ha.enabled is True


def test_secondary(write_conf: WriteConf) -> None:
    path = write_conf(
        BASE
        + """
[ha]
  role = "secondary"
  cluster_secret = "s3cret"
  primary = "https://node1.example.com:3000"
  peers = "https://node1.example.com:3000"
"""
    )
    ha = load_config(path).ha
    assert ha.role == "secondary"
    assert ha.primary == "https://node1.example.com:3000"
    assert ha.peers == ["https://node1.example.com:3000"]
    assert ha.takeover_after == 10.0
    assert ha.enabled is True
    assert not ha.is_primary


def test_role_values() -> None:
    err = _ha_error({"role": "leader"})
    assert str(err) == 'invalid \'ha.role\' "leader": expected "primary" or "secondary"'
    assert err.key == "ha.role"


def test_secondary_needs_primary_and_secret() -> None:
    err = _ha_error({"role": "secondary", "cluster_secret": "x"})
    assert "'ha.primary'" in str(err) and "secondary" in str(err)
    err = _ha_error({"role": "secondary", "primary": "https://n1.example.com"})
    assert "'ha.cluster_secret'" in str(err)


def test_peers_need_secret() -> None:
    err = _ha_error({"peers": ["https://n2.example.com"]})
    assert "'ha.cluster_secret'" in str(err) and "'ha.peers'" in str(err)


@pytest.mark.parametrize("url", ["n2.example.com:3000", "ftp://n2.example.com", "https://"])
def test_peer_and_primary_urls(url: str) -> None:
    err = _ha_error({"peers": [url], "cluster_secret": "x"})
    assert "'ha.peers'" in str(err)
    err = _ha_error({"role": "secondary", "primary": url, "cluster_secret": "x"})
    assert "'ha.primary'" in str(err)


@pytest.mark.parametrize("value", ["0s", "-5s", 0])
def test_takeover_after_positive(value: object) -> None:
    err = _ha_error({"takeover_after": value})
    assert "'ha.takeover_after'" in str(err) and "greater than 0" in str(err)


def test_takeover_after_bad_duration() -> None:
    err = _ha_error({"takeover_after": "10"})
    assert "'ha.takeover_after'" in str(err) and "missing unit" in str(err)


def test_coordinator_defaults_and_values(write_conf: WriteConf) -> None:
    assert HAConfig().coordinator == []
    assert HAConfig().coordinator_ttl == 5.0
    path = write_conf(
        BASE
        + """
[ha]
  coordinator = ["http://10.0.0.5:2379", "http://10.0.0.6:2379/", "https://etcd3.example.com:2379"]
  coordinator_ttl = "8s"
"""
    )
    config = load_config(path)
    assert config.ha.coordinator == [
        "http://10.0.0.5:2379",
        "http://10.0.0.6:2379/",
        "https://etcd3.example.com:2379",
    ]
    assert config.ha.coordinator_ttl == 8.0
    assert not any("coordinator" in warning for warning in config.warnings)


def test_coordinator_with_fewer_than_three_members_warns() -> None:
    config = load_config(None, {"server": {"auth": "a:b"}, "ha": {"coordinator": "http://e1:2379"}})
    assert any("'ha.coordinator'" in w and "fewer than 3" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("10.0.0.5:2379", "invalid URI"),
        ("grpc://10.0.0.5:2379", "http or https"),
        ("http://root:pw@10.0.0.5:2379", "passwords are not supported"),
        ("http://10.0.0.5:2379/v3", "only scheme, host and port"),
    ],
)
def test_coordinator_urls(url: str, says: str) -> None:
    err = _ha_error({"coordinator": ["http://10.0.0.6:2379", url]})
    assert "'ha.coordinator'" in str(err) and says in str(err)
    assert err.key == "ha.coordinator"
    assert "pw" not in str(err)


@pytest.mark.parametrize("value", ["1s", "0s", "2500ms"])
def test_coordinator_ttl_whole_seconds_from_two(value: str) -> None:
    err = _ha_error({"coordinator_ttl": value})
    assert err.key == "ha.coordinator_ttl"
    assert "'ha.coordinator_ttl'" in str(err) and "at least 2s" in str(err)


def test_coordinator_ttl_bad_duration() -> None:
    err = _ha_error({"coordinator_ttl": "5"})
    assert "'ha.coordinator_ttl'" in str(err) and "missing unit" in str(err)


def test_synchronous_defaults_and_values(write_conf: WriteConf) -> None:
    assert (HAConfig().synchronous, HAConfig().synchronous_timeout) == (False, 5.0)
    path = write_conf(
        BASE
        + """
[ha]
  cluster_secret = "s3cret"
  peers = ["https://node2.example.com:3000"]
  synchronous = true
  synchronous_timeout = "1.5s"
"""
    )
    ha = load_config(path).ha
    assert (ha.synchronous, ha.synchronous_timeout) == (True, 1.5)


@pytest.mark.parametrize("value", ["0s", "-1s"])
def test_synchronous_timeout_positive(value: str) -> None:
    err = _ha_error({"synchronous_timeout": value})
    assert "'ha.synchronous_timeout'" in str(err) and "greater than 0" in str(err)
    assert err.key == "ha.synchronous_timeout"


@pytest.mark.parametrize(
    ("ha", "key", "expected"),
    [
        ({"synchronous": "yes"}, "ha.synchronous", "a boolean"),
        ({"synchronous_timeout": "5"}, "ha.synchronous_timeout", "missing unit"),
        ({"synchronous_timeout": True}, "ha.synchronous_timeout", "a duration"),
    ],
)
def test_synchronous_types(ha: dict[str, object], key: str, expected: str) -> None:
    err = _ha_error(ha)
    assert f"'{key}'" in str(err) and expected in str(err)
    assert err.key == key


def test_synchronous_needs_a_secondary() -> None:
    err = _ha_error({"synchronous": True})
    assert err.key == "ha.synchronous" and "'ha.peers'" in str(err)
