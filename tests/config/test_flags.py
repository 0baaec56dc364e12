"""Command-line flags and their mapping to config overrides."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from rportd.config import add_server_flags, flags_to_overrides, load_config

WriteConf = Callable[[str], str]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rportd", exit_on_error=False)
    add_server_flags(parser)
    return parser.parse_args(list(argv))


def test_no_flags_no_overrides() -> None:
    ns = _parse()
    assert ns.config is None
    assert flags_to_overrides(ns) == {}


def test_config_flag_is_not_an_override() -> None:
    for argv in (["-c", "/etc/rport/rportd.conf"], ["--config=/etc/rport/rportd.conf"]):
        ns = _parse(*argv)
        assert ns.config == "/etc/rport/rportd.conf"
        assert flags_to_overrides(ns) == {}


def test_every_flag_maps_to_its_key() -> None:
    ns = _parse(
        "-a", "0.0.0.0:9999",
        "--url", "https://rport.example.com",
        "--key", "seed",
        "--auth", "id:pw",
        "--authfile", "/c.json",
        "--auth-table", "clients",
        "--auth-write",
        "--auth-multiuse-creds=false",
        "--equate-clientauthid-clientid=true",
        "--proxy", "http://intranet.lan/",
        "--use-ports", "20000-21000,22",
        "-e", "1-1024",
        "--data-dir", "/srv/rport",
        "--max-request-bytes-client", "1000",
        "--check-port-timeout", "5s",
        "--run-remote-cmd-timeout-sec", "30",
        "--allow-root",
        "--tunnel-proxy-cert-file", "/t.crt",
        "--tunnel-proxy-key-file", "/t.key",
        "--novnc-root", "/novnc",
        "--guacd-address", "127.0.0.1:4822",
        "-l", "/var/log/rportd.log",
        "--log-level", "debug",
        "--api-addr", "0.0.0.0:3000",
        "--api-auth", "admin:pw",
        "--api-authfile", "/u.json",
        "--api-auth-user-table", "users",
        "--api-auth-group-table", "groups",
        "--api-jwt-secret", "jwt",
        "--api-doc-root", "/ui",
        "--api-cert-file", "/a.crt",
        "--api-key-file", "/a.key",
        "--api-access-log-file", "/access.log",
        "--max-request-bytes", "2048",
        "--max-filepush-bytes", "4096",
        "--db-type", "sqlite",
        "--db-name", "/db.sqlite",
        "--db-host", "localhost:3306",
        "--db-user", "rport",
        "--db-password", "dbpw",
        "--monitoring-data-storage-days", "3",
        "--save-clients-interval", "1m",
    )  # fmt: skip
    assert flags_to_overrides(ns) == {
        "server": {
            "address": "0.0.0.0:9999",
            "url": "https://rport.example.com",
            "key_seed": "seed",
            "auth": "id:pw",
            "auth_file": "/c.json",
            "auth_table": "clients",
            "auth_write": True,
            "auth_multiuse_creds": False,
            "equate_clientauthid_clientid": True,
            "proxy": "http://intranet.lan/",
            "used_ports": ["20000-21000", "22"],
            "excluded_ports": ["1-1024"],
            "data_dir": "/srv/rport",
            "max_request_bytes_client": 1000,
            "check_port_timeout": "5s",
            "run_remote_cmd_timeout_sec": 30,
            "allow_root": True,
            "tunnel_proxy_cert_file": "/t.crt",
            "tunnel_proxy_key_file": "/t.key",
            "novnc_root": "/novnc",
            "guacd_address": "127.0.0.1:4822",
        },
        "logging": {"log_file": "/var/log/rportd.log", "log_level": "debug"},
        "api": {
            "address": "0.0.0.0:3000",
            "auth": "admin:pw",
            "auth_file": "/u.json",
            "auth_user_table": "users",
            "auth_group_table": "groups",
            "jwt_secret": "jwt",
            "doc_root": "/ui",
            "cert_file": "/a.crt",
            "key_file": "/a.key",
            "access_log_file": "/access.log",
            "max_request_bytes": 2048,
            "max_filepush_size": 4096,
        },
        "database": {
            "db_type": "sqlite",
            "db_name": "/db.sqlite",
            "db_host": "localhost:3306",
            "db_user": "rport",
            "db_password": "dbpw",
        },
        "monitoring": {"data_storage_days": 3},
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--auth-write"], True),
        (["--auth-write=false"], False),
        (["--auth-write=0"], False),
        (["--auth-write=F"], False),
        (["--auth-write=TRUE"], True),
        (["--auth-write=t"], True),
        (["--auth-write", "false"], False),
    ],
)
def test_bool_flags_like_pflag(argv: list[str], expected: bool) -> None:
    assert flags_to_overrides(_parse(*argv)) == {"server": {"auth_write": expected}}


def test_bad_bool_value_is_rejected() -> None:
    with pytest.raises(argparse.ArgumentError):
        _parse("--allow-root=maybe")


def test_port_lists_split_and_repeat() -> None:
    ns = _parse("-e", "22,80", "--exclude-ports", "443", "--use-ports=20000-30000")
    assert flags_to_overrides(ns)["server"] == {
        "excluded_ports": ["22", "80", "443"],
        "used_ports": ["20000-30000"],
    }
    # An empty value means "exclude nothing", as upstream's help says.
    assert flags_to_overrides(_parse("-e", ""))["server"] == {"excluded_ports": []}


def test_int_flags_like_go() -> None:
    assert flags_to_overrides(_parse("--max-request-bytes", "0x10"))["api"] == {
        "max_request_bytes": 16
    }
    with pytest.raises(argparse.ArgumentError):
        _parse("--max-request-bytes", "lots")


def test_flags_override_file(write_conf: WriteConf) -> None:
    path = write_conf(
        """
[server]
  address = "0.0.0.0:8080"
  auth = "clientAuth1:1234"
  auth_write = true
  excluded_ports = ["1-1024"]
  check_port_timeout = "2s"
[logging]
  log_level = "info"
"""
    )
    ns = _parse(
        "-c", path, "-a", "127.0.0.1:9000", "--auth-write=false", "-e", "",
        "--check-port-timeout", "10s", "--log-level", "debug",
    )  # fmt: skip
    config = load_config(ns.config, flags_to_overrides(ns))
    assert config.server.address == "127.0.0.1:9000"
    assert config.server.auth_write is False
    assert config.server.excluded_ports == []
    assert config.server.check_port_timeout == 10.0
    assert config.logging.log_level == "debug"
    assert config.server.url == ["http://127.0.0.1:9000"]


def test_url_flag_with_commas() -> None:
    ns = _parse("--auth", "a:b", "--url", "http://a.example.com,https://b.example.com")
    config = load_config(None, flags_to_overrides(ns))
    assert config.server.url == ["http://a.example.com", "https://b.example.com"]


def test_bad_duration_flag_reported_by_loader() -> None:
    ns = _parse("--auth", "a:b", "--check-port-timeout", "5")
    with pytest.raises(Exception) as err:
        load_config(None, flags_to_overrides(ns))
    assert "'server.check_port_timeout'" in str(err.value)
    assert 'missing unit in duration "5"' in str(err.value)


def test_help_lists_flags(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="rportd")
    add_server_flags(parser)
    text = parser.format_help()
    for flag in ("--addr", "--api-addr", "--exclude-ports", "--save-clients-interval", "--config"):
        assert flag in text
