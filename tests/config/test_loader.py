"""Loading: defaults, file, overrides, aliases, unknown keys, type and syntax errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from rportd.config import (
    ApiConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    HAConfig,
    LoggingConfig,
    MonitoringConfig,
    ServerConfig,
    load_config,
)
from rportd.config.model import CaddyConfig, NotificationsConfig, PushoverConfig, SmtpConfig

WriteConf = Callable[[str], str]

MINIMAL = """
[server]
  auth = "clientAuth1:1234"
"""

AUTH = {"server": {"auth": "clientAuth1:1234"}}


def test_server_defaults_match_spec() -> None:
    s = ServerConfig()
    assert s.address == "0.0.0.0:8080"
    assert s.url == []
    assert s.pairing_url == "https://pairing.openrport.io"
    assert s.key_seed == ""
    assert (s.auth, s.auth_file, s.auth_table) == ("", "", "")
    assert s.auth_write is True
    assert s.auth_multiuse_creds is True
    assert s.equate_clientauthid_clientid is False
    assert s.proxy == ""
    assert s.used_ports == ["20000-30000"]
    assert s.excluded_ports == ["1-1024"]
    assert s.data_dir == "/var/lib/rport"
    assert s.sqlite_wal is True
    assert s.max_concurrent_ssh_handshakes == 64  # rportd's measured default (README Security)
    assert s.purge_disconnected_clients is False
    assert s.keep_disconnected_clients == 3600.0
    assert s.purge_disconnected_clients_interval == 60.0
    assert s.check_clients_connection_interval == 300.0
    assert s.check_clients_connection_timeout == 30.0
    assert s.max_request_bytes_client == 524288
    assert s.check_port_timeout == 2.0
    assert s.run_remote_cmd_timeout_sec == 60
    assert s.allow_root is False
    assert s.client_login_wait == 2.0
    assert s.max_failed_login == 5
    assert s.ban_time == 3600
    assert s.jobs_max_results == 10000
    assert s.tunnel_host == ""
    assert (s.tunnel_proxy_cert_file, s.tunnel_proxy_key_file) == ("", "")
    assert s.tunnel_enable_acme is False
    assert s.tunnel_cors == []
    assert (s.novnc_root, s.guacd_address) == ("", "")
    assert s.tls_min == "1.3"
    assert s.acme_http_port == 0
    assert s.tunnel_proxy_enabled is False
    # Mutable defaults are not shared.
    assert ServerConfig().used_ports is not s.used_ports


def test_other_section_defaults_match_spec() -> None:
    assert LoggingConfig() == LoggingConfig(log_file="", log_level="info")
    a = ApiConfig()
    assert a.address == "" and a.enabled is False
    assert a.user_header == "Authentication-User"
    assert a.default_user_group == "Administrators"
    assert a.create_missing_users is False
    assert a.jwt_secret == ""
    assert a.max_token_lifetime == 0
    assert a.tls_min == "1.3"
    assert a.user_login_wait == 2.0
    assert a.max_failed_login == 10
    assert a.ban_time == 600
    assert a.password_min_length == 14
    assert a.password_zxcvbn_minscore == 0
    assert a.max_request_bytes == 10240
    assert a.max_filepush_size == 10485760
    assert a.cors == []
    assert a.enable_ws_test_endpoints is False
    assert a.two_fa_token_delivery == "" and a.two_fa_enabled is False
    assert a.two_fa_token_ttl_seconds == 600
    assert a.two_fa_send_timeout == 10.0
    assert a.two_fa_send_to_type == "none"
    assert a.two_fa_send_to_regex == ""
    assert a.totp_enabled is False
    assert a.totp_login_session_ttl == 600.0
    assert a.totp_account_name == "RPort"
    assert a.enable_audit_log is True
    assert a.use_ip_obfuscation is False
    assert a.audit_log_rotation == "monthly"
    assert DatabaseConfig() == DatabaseConfig("", "", "", "", "")
    m = MonitoringConfig()
    assert m.enabled is True
    assert m.data_storage_duration == 7 * 86400
    assert m.data_storage_days == 0
    n = NotificationsConfig()
    assert n.notification_script_dir == "/usr/local/lib/rport/notification_scripts"
    assert n.log_storage_duration == 7 * 86400
    assert n.cleanup_interval == 86400
    assert PushoverConfig() == PushoverConfig("", "")
    assert SmtpConfig().secure is False
    assert CaddyConfig().enabled is False
    ha = HAConfig()
    assert (ha.role, ha.cluster_secret, ha.peers, ha.primary) == ("primary", "", [], "")
    assert ha.takeover_after == 10.0
    assert ha.enabled is False


def test_no_file_uses_defaults_and_flags(tmp_path: Path) -> None:
    config = load_config(None, AUTH)
    assert config.source_path is None
    assert config.server.url == ["http://0.0.0.0:8080"]
    assert config.server.address == "0.0.0.0:8080"
    assert config.warnings == []
    assert config.ha == HAConfig()
    assert not list(tmp_path.iterdir())  # nothing created


def test_no_file_and_no_auth_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None)
    assert "client authentication must be enabled" in str(err.value)


def test_cwd_rportd_conf_is_found(tmp_path: Path) -> None:
    (tmp_path / "rportd.conf").write_text(MINIMAL + '  address = "127.0.0.1:9999"\n')
    config = load_config(None)
    assert config.source_path == "rportd.conf"
    assert config.server.address == "127.0.0.1:9999"
    assert config.server.url == ["http://127.0.0.1:9999"]


def test_cwd_search_can_be_disabled(tmp_path: Path) -> None:
    (tmp_path / "rportd.conf").write_text(MINIMAL + '  address = "127.0.0.1:9999"\n')
    config = load_config(None, AUTH, search_cwd=False)
    assert config.source_path is None
    assert config.server.address == "0.0.0.0:8080"


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    assert missing in str(err.value)


def test_precedence_flag_over_file_over_default(write_conf: WriteConf) -> None:
    path = write_conf(
        MINIMAL
        + """
  address = "0.0.0.0:9000"
  data_dir = "/srv/rport"
  check_port_timeout = "5s"
[api]
  address = "0.0.0.0:3000"
  auth = "admin:foobaz"
  max_request_bytes = 2048
"""
    )
    config = load_config(
        path,
        {
            "server": {"address": "10.0.0.1:7000", "check_port_timeout": "7s"},
            "api": {"address": "127.0.0.1:3001"},
        },
    )
    assert config.server.address == "10.0.0.1:7000"  # flag
    assert config.server.check_port_timeout == 7.0  # flag, parsed as duration
    assert config.server.data_dir == "/srv/rport"  # file
    assert config.server.ban_time == 3600  # default
    assert config.api.address == "127.0.0.1:3001"
    assert config.api.max_request_bytes == 2048
    assert config.server.url == ["http://10.0.0.1:7000"]
    assert config.source_path == path


def test_unknown_sections_and_keys_are_ignored(
    write_conf: WriteConf, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_conf(
        MINIMAL
        + """
  no_such_key = 42
  nested = { a = 1 }
[server.sub]
  x = 1
[whatever]
  foo = "bar"
[plus-plugin]
  plugin_path = "/usr/local/lib/rport/rport-plus.so"
[plus-oauth]
  provider = "github"
"""
    )
    with caplog.at_level(logging.DEBUG, logger="rportd.config"):
        config = load_config(path)
    assert config.server.auth == "clientAuth1:1234"
    text = caplog.text
    assert "server.no_such_key" in text
    assert "whatever" in text


def test_unknown_override_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"server\.bogus"):
        load_config(None, {"server": {"auth": "a:b", "bogus": 1}})


def test_toml_syntax_error_names_file_and_line(write_conf: WriteConf) -> None:
    path = write_conf('[server]\n  auth = "a:b"\n  address = \n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert path in message
    assert "line 3" in message


def test_unquoted_duration_is_a_syntax_error(write_conf: WriteConf) -> None:
    # The example file's `two_fa_send_timeout = 10s` is not valid TOML.
    path = write_conf("[api]\n  two_fa_send_timeout = 10s\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_config(path)


@pytest.mark.parametrize(
    ("snippet", "key", "expected"),
    [
        ('[server]\nmax_failed_login = "five"', "server.max_failed_login", "an integer"),
        ("[server]\nmax_failed_login = true", "server.max_failed_login", "an integer"),
        ("[server]\nmax_failed_login = 1.5", "server.max_failed_login", "an integer"),
        ('[server]\nauth_write = "yes"', "server.auth_write", "a boolean"),
        ("[server]\nauth_write = 1", "server.auth_write", "a boolean"),
        ("[server]\naddress = true", "server.address", "a string"),
        ("[server]\naddress = [1]", "server.address", "a string"),
        ('[server]\nclient_login_wait = "2"', "server.client_login_wait", "a number"),
        ("[server]\nused_ports = 20000", "server.used_ports", "a list of strings"),
        ("[server]\nused_ports = [true]", "server.used_ports", "a list of strings"),
        ("[server]\ncheck_port_timeout = true", "server.check_port_timeout", "a duration"),
        ('[server]\ncheck_port_timeout = "2x"', "server.check_port_timeout", "unknown unit"),
        ('[server]\nkeep_lost_clients = "soon"', "server.keep_lost_clients", "invalid duration"),
        ("[monitoring]\ndata_storage_duration = 7", "monitoring.data_storage_duration", "7d"),
        ('[monitoring]\ndata_storage_duration = "7w"', "monitoring.data_storage_duration", "units"),
        ("[ha]\ntakeover_after = false", "ha.takeover_after", "a duration"),
        ('[ha]\npeers = {a = "b"}', "ha.peers", "a list of strings"),
        ('server = "x"', "server", "a table"),
    ],
)
def test_type_errors_name_key_and_expected_type(
    write_conf: WriteConf, snippet: str, key: str, expected: str
) -> None:
    path = write_conf(snippet + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, AUTH)
    message = str(err.value)
    assert f"'{key}'" in message
    assert expected in message
    assert err.value.key == key


def test_type_error_does_not_echo_secret(write_conf: WriteConf) -> None:
    path = write_conf('[database]\ndb_password = ["s3cr3t"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, AUTH)
    assert "s3cr3t" not in str(err.value)
    assert "database.db_password" in str(err.value)


def test_lenient_value_forms(write_conf: WriteConf) -> None:
    path = write_conf(
        MINIMAL
        + """
  url = "http://a.example.com:8080, https://b.example.com"
  used_ports = "20000-20010,22"
  excluded_ports = [22]
  ban_time = 60.0
  client_login_wait = 3
  check_port_timeout = 3000000000
  tls_min = 1.2
[caddy-integration]
  api_port = 3000
"""
    )
    config = load_config(path)
    assert config.server.url == ["http://a.example.com:8080", "https://b.example.com"]
    assert config.server.used_ports == ["20000-20010", "22"]
    assert config.server.excluded_ports == ["22"]
    assert config.server.ban_time == 60
    assert isinstance(config.server.ban_time, int)
    assert config.server.client_login_wait == 3.0
    assert config.server.check_port_timeout == 3.0  # integer = nanoseconds
    assert config.server.tls_min == "1.2"
    assert config.caddy.api_port == "3000"
    assert config.server.allowed_ports() == frozenset(range(20000, 20011))


def test_single_url_string(write_conf: WriteConf) -> None:
    path = write_conf(MINIMAL + '  url = "https://rport.example.com"\n')
    assert load_config(path).server.url == ["https://rport.example.com"]


def test_ports_kept_as_configured(write_conf: WriteConf) -> None:
    path = write_conf(MINIMAL + "  used_ports = ['20000-20100', '8000']\n  excluded_ports = []\n")
    config = load_config(path)
    assert config.server.used_ports == ["20000-20100", "8000"]
    assert config.server.excluded_ports == []


def test_deprecated_server_aliases(write_conf: WriteConf) -> None:
    path = write_conf(
        MINIMAL
        + """
  cleanup_lost_clients = true
  keep_lost_clients = "2h"
  keep_disconnected_clients = "3h"
  cleanup_clients_interval = "5m"
  max_request_bytes = 5000
  max_filepush_size = 123456
  enable_ws_test_endpoints = true
[api]
  max_request_bytes = 9999
"""
    )
    config = load_config(path)
    assert config.server.purge_disconnected_clients is True
    assert config.server.keep_disconnected_clients == 7200.0  # alias wins, as upstream
    assert config.server.purge_disconnected_clients_interval == 300.0
    assert config.api.max_request_bytes == 5000
    assert config.api.max_filepush_size == 123456
    assert config.api.enable_ws_test_endpoints is True
    joined = "\n".join(config.warnings)
    for old in (
        "cleanup_lost_clients",
        "keep_lost_clients",
        "cleanup_clients_interval",
        "max_request_bytes",
        "max_filepush_size",
        "enable_ws_test_endpoints",
    ):
        assert f"'{old}' is deprecated" in joined


def test_zero_deprecated_aliases_are_ignored(write_conf: WriteConf) -> None:
    path = write_conf(
        MINIMAL
        + """
  cleanup_lost_clients = false
  keep_lost_clients = "0s"
  max_request_bytes = 0
  purge_disconnected_clients = true
"""
    )
    config = load_config(path)
    assert config.server.purge_disconnected_clients is True
    assert config.server.keep_disconnected_clients == 3600.0
    assert config.api.max_request_bytes == 10240
    assert config.warnings == []


def test_flag_wins_over_deprecated_alias_in_file(write_conf: WriteConf) -> None:
    path = write_conf(MINIMAL + "  max_request_bytes = 5000\n")
    config = load_config(path, {"api": {"max_request_bytes": 777}})
    assert config.api.max_request_bytes == 777


def test_deprecated_monitoring_days(write_conf: WriteConf) -> None:
    path = write_conf(
        MINIMAL + '[monitoring]\n  data_storage_days = 30\n  data_storage_duration = "2d"\n'
    )
    config = load_config(path)
    assert config.monitoring.data_storage_days == 30
    assert config.monitoring.data_storage_duration == 30 * 86400
    assert any("data_storage_days" in w for w in config.warnings)
    # The (deprecated) flag maps to the same key.
    config = load_config(None, {**AUTH, "monitoring": {"data_storage_days": 2}})
    assert config.monitoring.data_storage_duration == 2 * 86400


def test_monitoring_and_notifications_values(write_conf: WriteConf) -> None:
    path = write_conf(
        MINIMAL
        + """
[monitoring]
  enabled = false
  data_storage_duration = "12h"
[notifications]
  log_storage_duration = "14d"
  cleanup_interval = "6h"
"""
    )
    config = load_config(path)
    assert config.monitoring.enabled is False
    assert config.monitoring.data_storage_duration == 12 * 3600
    assert config.notifications.log_storage_duration == 14 * 86400
    assert config.notifications.cleanup_interval == 6 * 3600


def test_check_false_skips_validation(write_conf: WriteConf) -> None:
    path = write_conf('[logging]\n  log_level = "loud"\n')
    config = load_config(path, check=False)
    assert config.logging.log_level == "loud"
    assert config.server.url == ["http://0.0.0.0:8080"]


def test_load_config_touches_nothing(tmp_path: Path, write_conf: WriteConf) -> None:
    data_dir = tmp_path / "data"
    path = write_conf(MINIMAL + f'  data_dir = "{data_dir}"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    config = load_config(path)
    assert config.server.data_dir == str(data_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_redacted_masks_secrets(write_conf: WriteConf) -> None:
    path = write_conf(
        """
[server]
  auth = "clientAuth1:client-pass"
  key_seed = "seed-secret"
  proxy = "http://user:proxy-pass@intranet.lan:8080/"
[api]
  address = "0.0.0.0:3000"
  auth = "admin:api-pass"
  jwt_secret = "jwt-secret"
[database]
  db_type = "mysql"
  db_password = "db-pass"
[smtp]
  auth_password = "smtp-pass"
[pushover]
  api_token = "po-token"
[ha]
  cluster_secret = "cluster-pass"
  peers = ["https://node2.example.com:3000"]
"""
    )
    config = load_config(path)
    redacted = config.redacted()
    text = repr(redacted)
    for secret in (
        "client-pass",
        "seed-secret",
        "proxy-pass",
        "api-pass",
        "jwt-secret",
        "db-pass",
        "smtp-pass",
        "po-token",
        "cluster-pass",
    ):
        assert secret not in text
    assert redacted["server"]["auth"] == "clientAuth1:***"
    assert redacted["api"]["auth"] == "admin:***"
    assert redacted["server"]["proxy"] == "http://user:***@intranet.lan:8080/"
    assert redacted["ha"]["cluster_secret"] == "***"
    assert redacted["ha"]["peers"] == ["https://node2.example.com:3000"]
    assert redacted["caddy-integration"]["caddy"] == ""
    assert redacted["server"]["key_seed"] == "***"
    assert redacted["source_path"] == path
    # The config itself is untouched.
    assert config.api.jwt_secret == "jwt-secret"


def test_redacted_leaves_empty_secrets_empty() -> None:
    redacted = Config().redacted()
    assert redacted["api"]["jwt_secret"] == ""
    assert redacted["server"]["auth"] == ""


FULL_EXAMPLE = """
# rportd.example.conf-like configuration
[server]
  address = "0.0.0.0:8080"
  url = ["http://rport.example.com:8080", "https://rport2.example.com"]
  tunnel_host = "tunnels.rport.example.com"
  pairing_url = "https://pairing.example.com"
  key_seed = "5448e69530b4b97fb510f96ff1550500b093"
  auth = "clientAuth1:1234"
  #auth_file = "/var/lib/rport/client-auth.json"
  auth_multiuse_creds = true
  equate_clientauthid_clientid = false
  auth_write = true
  #proxy = "http://intranet.lan:8080/"
  used_ports = ['20000-30000']
  excluded_ports = ['1-1024']
  data_dir = "/var/lib/rport"
  sqlite_wal = true
  max_concurrent_ssh_handshakes = 4
  purge_disconnected_clients = false
  keep_disconnected_clients = "1h"
  purge_disconnected_clients_interval = "1m"
  check_clients_connection_interval = "5m"
  check_clients_connection_timeout = "30s"
  max_request_bytes_client = 524288
  run_remote_cmd_timeout_sec = 60
  check_port_timeout = "1s"
  allow_root = false
  client_login_wait = 2.0
  max_failed_login = 5
  ban_time = 3600
  #tunnel_proxy_cert_file = "/var/lib/rport/server.crt"
  #tunnel_proxy_key_file = "/var/lib/rport/server.key"
  tunnel_enable_acme = false
  tunnel_cors = []
  #novnc_root = "/var/lib/rport/novncroot"
  jobs_max_results = 10000
  tls_min = "1.3"
  acme_http_port = 0

[logging]
  log_file = "/var/log/rport/rportd.log"
  log_level = "info"

[api]
  address = "0.0.0.0:3000"
  base_url = "https://rport.example.com:443"
  enable_acme = false
  auth = "admin:foobaz"
  #auth_file = "/var/lib/rport/api-auth.json"
  #auth_user_table = "users"
  #auth_group_table = "groups"
  #auth_group_details_table = "group_details"
  user_header = "Authentication-User"
  create_missing_users = false
  default_user_group = "Administrators"
  two_fa_token_ttl_seconds = 600
  two_fa_send_timeout = "10s"
  two_fa_send_to_type = 'none'
  totp_enabled = false
  totp_login_session_ttl = '600s'
  totp_account_name = 'RPort'
  jwt_secret = "quei1too5Eegh3ahng3a"
  max_token_lifetime = 720
  #doc_root = "/var/lib/rport/docroot"
  #cert_file = "/var/lib/rport/server.crt"
  #key_file = "/var/lib/rport/server.key"
  access_log_file = "/var/log/rport/api-access.log"
  user_login_wait = 2.0
  max_failed_login = 5
  ban_time = 3600
  enable_audit_log = true
  use_ip_obfuscation = false
  audit_log_rotation = 'monthly'
  password_min_length = 14
  password_zxcvbn_minscore = 0
  tls_min = "1.3"
  max_request_bytes = 10240
  max_filepush_size = 10485760
  cors = ["https://ui.example.com", "*"]
  enable_ws_test_endpoints = false

[database]
  #db_type = "sqlite"
  #db_name = "/var/lib/rport/database.db"

[pushover]
  #api_token = "<YOUR_PUSHOVER_API_TOKEN>"
  #user_key = "<YOUR_PUSHOVER_USER_KEY>"

[smtp]
  #server = 'smtp.example.com:2525'
  #sender_email = 'rport@gmail.com'

[notifications]
  notification_script_dir = "/usr/local/lib/rport/notification_scripts"

[monitoring]
  enabled = true
  data_storage_duration = "7d"

[caddy-integration]
  #caddy = "/usr/bin/caddy"

[plus-plugin]
  #plugin_path = "/usr/local/lib/rport/rport-plus.so"

[ha]
  role = "primary"
  cluster_secret = "Aepho2ahnooch0ieCh2a"
  peers = ["https://rport2.example.com:3000"]
  takeover_after = "15s"
"""


def test_full_example_config_loads(write_conf: WriteConf) -> None:
    config = load_config(write_conf(FULL_EXAMPLE))
    assert config.warnings == []
    s = config.server
    assert s.url == ["http://rport.example.com:8080", "https://rport2.example.com"]
    assert s.tunnel_host == "tunnels.rport.example.com"
    assert s.key_seed == "5448e69530b4b97fb510f96ff1550500b093"
    assert s.client_auth_credentials() == ("clientAuth1", "1234")
    assert s.max_concurrent_ssh_handshakes == 4
    assert s.check_port_timeout == 1.0
    assert len(s.allowed_ports()) == 10001
    assert config.logging.log_file == "/var/log/rport/rportd.log"
    a = config.api
    assert a.enabled and a.auth == "admin:foobaz"
    assert a.two_fa_send_timeout == 10.0
    assert a.totp_login_session_ttl == 600.0
    assert a.max_token_lifetime == 720
    assert a.max_failed_login == 5 and a.ban_time == 3600
    assert a.cors == ["https://ui.example.com", "*"]
    assert config.database.enabled is False
    assert config.monitoring.data_storage_duration == 7 * 86400
    assert config.caddy.enabled is False
    assert config.ha.enabled is True
    assert config.ha.peers == ["https://rport2.example.com:3000"]
    assert config.ha.takeover_after == 15.0
