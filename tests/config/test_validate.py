"""Every fatal rule of config.md, with messages that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from rportd.config import Config, ConfigError, load_config, validate


def _load(**sections: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, object]] = {"server": {"auth": "clientAuth1:1234"}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides)


def _error(**sections: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        _load(**sections)
    return str(err.value)


API_ON = {"address": "0.0.0.0:3000", "auth": "admin:foobaz"}


def test_valid_minimal_config() -> None:
    config = _load()
    assert config.server.auth == "clientAuth1:1234"


def test_validate_on_constructed_config() -> None:
    config = Config()
    config.server.auth = "a:b"
    validate(config)
    assert config.server.url == ["http://0.0.0.0:8080"]
    config.logging.log_level = "verbose"
    with pytest.raises(ConfigError, match="invalid log level"):
        validate(config)


# --- [server] client auth -------------------------------------------------------------------


def test_client_auth_required() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"server": {"address": "0.0.0.0:8080"}})
    assert str(err.value) == (
        "client authentication must be enabled: set either 'auth', 'auth_file' or 'auth_table'"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"auth": "a:b", "auth_file": "/x.json"},
            "'auth_file' and 'auth' are both set: expected only one of them",
        ),
        (
            {"auth": "", "auth_file": "/x.json", "auth_table": "clients"},
            "'auth_file' and 'auth_table' are both set: expected only one of them",
        ),
        (
            {"auth": "a:b", "auth_table": "clients"},
            "'auth' and 'auth_table' are both set: expected only one of them",
        ),
    ],
)
def test_client_auth_exclusive(values: dict[str, Any], message: str) -> None:
    assert _error(server=values, database={"db_type": "sqlite"}) == message


def test_auth_table_needs_db_type() -> None:
    message = _error(server={"auth": "", "auth_table": "clients"})
    assert message == "'db_type' must be set when 'auth_table' is set"
    config = _load(server={"auth": "", "auth_table": "clients"}, database={"db_type": "sqlite"})
    assert config.server.auth_table == "clients"


@pytest.mark.parametrize("auth", ["nocolon", ":pass", "id:"])
def test_client_auth_format(auth: str) -> None:
    message = _error(server={"auth": auth})
    assert "'server.auth'" in message
    assert "'<client-id>:<password>'" in message


def test_auth_file_alone_is_fine() -> None:
    assert _load(server={"auth": "", "auth_file": "/etc/rport/clients.json"}).server.auth == ""


# --- [database] ------------------------------------------------------------------------------


def test_db_type_values() -> None:
    assert _error(database={"db_type": "oracle"}) == (
        "invalid 'db_type', expected 'mysql', 'postgres' or 'sqlite', got \"oracle\""
    )
    for db_type in ("mysql", "postgres", "sqlite", ""):
        assert _load(database={"db_type": db_type}).database.db_type == db_type


@pytest.mark.parametrize(
    ("db_type", "db_host", "where"),
    [
        ("mysql", "", "127.0.0.1:3306"),
        ("mysql", "db.example.com:3307", "db.example.com:3307"),
        ("mysql", "db.example.com", "db.example.com:3306"),
        ("mysql", "[::1]:3308", "[::1]:3308"),
        ("mysql", "socket:/var/run/mysqld/mysqld.sock", "socket /var/run/mysqld/mysqld.sock"),
        ("postgres", "pg.example.com", "pg.example.com:5432"),
        ("postgres", "socket:/var/run/postgresql", "socket /var/run/postgresql"),
    ],
)
def test_db_host_forms(db_type: str, db_host: str, where: str) -> None:
    database = _load(database={"db_type": db_type, "db_host": db_host}).database
    assert str(database.endpoint()) == where


@pytest.mark.parametrize(
    "db_host", ["db:port", "socket:relative.sock", "[::1:3306", "db:0", ":3306"]
)
def test_malformed_db_host_stops_the_server(db_host: str) -> None:
    message = _error(database={"db_type": "mysql", "db_host": db_host})
    assert message.startswith(f"invalid 'db_host' '{db_host}': ")


# --- [api] ------------------------------------------------------------------------------------


def test_api_auth_required_when_api_on() -> None:
    message = _error(api={"address": "0.0.0.0:3000"})
    expected = "authentication must be enabled: set either 'auth', 'auth_file' or 'auth_user_table'"
    assert expected in message


def test_api_off_needs_no_auth() -> None:
    assert _load().api.enabled is False


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"auth_file": "/u.json"}, "'auth_file' and 'auth' are both set"),
        ({"auth_user_table": "users", "auth_group_table": "g"}, "'auth_user_table' and 'auth' are"),
        (
            {"auth": "", "auth_file": "/u.json", "auth_user_table": "users"},
            "'auth_user_table' and 'auth_file' are both set",
        ),
        (
            {"auth": "", "auth_user_table": "users"},
            "when 'auth_user_table' is set, 'auth_group_table' must be set as well",
        ),
    ],
)
def test_api_auth_rules(values: dict[str, Any], fragment: str) -> None:
    assert fragment in _error(api={**API_ON, **values}, database={"db_type": "sqlite"})


def test_api_user_table_needs_db_type() -> None:
    message = _error(api={"address": ":3000", "auth_user_table": "users", "auth_group_table": "g"})
    assert "'db_type' must be set when 'auth_user_table' is set" in message
    config = _load(
        api={"address": ":3000", "auth_user_table": "users", "auth_group_table": "groups"},
        database={"db_type": "mysql"},
    )
    assert config.api.auth_group_table == "groups"


def test_api_auth_format() -> None:
    message = _error(api={**API_ON, "auth": "admin"})
    assert "'api.auth'" in message and "<user>:<password>" in message


def test_auth_header_rules() -> None:
    assert "'auth_header' cannot be used with single user 'auth'" in _error(
        api={**API_ON, "auth_header": "X-Auth"}
    )
    api = {"address": ":3000", "auth_file": "/u.json", "auth_header": "X-Auth", "user_header": ""}
    assert "'user_header' must be set when 'auth_header' is set" in _error(api=api)


def test_doc_root_needs_address() -> None:
    assert "to use document root you need to specify API address" in _error(
        api={"doc_root": "/var/lib/rport/docroot"}
    )
    assert _load(api={**API_ON, "doc_root": "/srv/ui"}).api.doc_root == "/srv/ui"


def test_api_cert_and_key_both_or_none() -> None:
    assert "when 'cert_file' is set, 'key_file' must be set as well" in _error(
        api={**API_ON, "cert_file": "/c.pem"}
    )
    assert "when 'key_file' is set, 'cert_file' must be set as well" in _error(
        api={**API_ON, "key_file": "/k.pem"}
    )
    config = _load(api={**API_ON, "cert_file": "/c.pem", "key_file": "/k.pem"})
    assert config.api.cert_file == "/c.pem"  # files are not read by the loader


def test_api_acme_rules() -> None:
    file = {"address": ":3000", "auth_file": "/u.json"}
    assert "base_url must have a host when acme is enabled" in _error(
        api={**file, "enable_acme": True}
    )
    both = {**file, "enable_acme": True, "base_url": "https://x.example.com"}
    assert "cert_file, key_file and enable_acme cannot be used together" in _error(
        api={**both, "cert_file": "/c", "key_file": "/k"}
    )


@pytest.mark.parametrize("tls_min", ["1.0", "1.1", "1.4", "tls1.2"])
def test_tls_min_values(tls_min: str) -> None:
    message = _error(api={**API_ON, "tls_min": tls_min})
    assert "'api.tls_min'" in message and "TLS must be either 1.2 or 1.3" in message
    message = _error(server={"tls_min": tls_min})
    assert "'server.tls_min'" in message and "TLS must be either 1.2 or 1.3" in message


def test_tls_min_accepted() -> None:
    config = _load(api={**API_ON, "tls_min": "1.2"}, server={"tls_min": "1.2"})
    assert (config.api.tls_min, config.server.tls_min) == ("1.2", "1.2")


@pytest.mark.parametrize("value", [-1, 2161, 100000])
def test_max_token_lifetime_range(value: int) -> None:
    assert "max_token_lifetime outside allowable ranges. must be between 0 and 2160" in _error(
        api={**API_ON, "max_token_lifetime": value}
    )


@pytest.mark.parametrize("value", [0, 720, 2160])
def test_max_token_lifetime_ok(value: int) -> None:
    assert _load(api={**API_ON, "max_token_lifetime": value}).api.max_token_lifetime == value


@pytest.mark.parametrize("value", [-2, 5])
def test_password_zxcvbn_minscore_range(value: int) -> None:
    message = _error(api={**API_ON, "password_zxcvbn_minscore": value})
    assert "'api.password_zxcvbn_minscore'" in message and "-1 and 4" in message


@pytest.mark.parametrize("value", [-1, 0, 4])
def test_password_zxcvbn_minscore_ok(value: int) -> None:
    assert _load(api={**API_ON, "password_zxcvbn_minscore": value})


def test_audit_log_rotation_values() -> None:
    message = _error(api={"audit_log_rotation": "hourly"})
    assert 'invalid api.audit_log_rotation: "hourly"' in message
    for rotation in ("daily", "weekly", "monthly", "yearly"):
        assert _load(api={"audit_log_rotation": rotation}).api.audit_log_rotation == rotation
    # Not checked when the audit log is off.
    assert _load(api={"audit_log_rotation": "x", "enable_audit_log": False})


# --- 2FA ----------------------------------------------------------------------------------------

FILE_AUTH = {"address": ":3000", "auth_file": "/u.json"}


def test_2fa_not_with_single_static_user() -> None:
    assert "2FA is not available if you use a single static user-password pair" in _error(
        api={**API_ON, "two_fa_token_delivery": "smtp"}
    )


def test_2fa_and_totp_exclusive() -> None:
    api = {**FILE_AUTH, "two_fa_token_delivery": "/usr/bin/send", "totp_enabled": True}
    assert "two factor auth and totp_enabled options cannot be both enabled" in _error(api=api)
    assert _load(api={**FILE_AUTH, "totp_enabled": True}).api.totp_enabled is True
    assert _load(api={**FILE_AUTH, "two_fa_token_delivery": "/usr/bin/send"}).api.two_fa_enabled


def test_2fa_delivery_requirements() -> None:
    assert "pushover.api_token is required" in _error(
        api={**FILE_AUTH, "two_fa_token_delivery": "pushover"}
    )
    assert _load(
        api={**FILE_AUTH, "two_fa_token_delivery": "pushover"}, pushover={"api_token": "t"}
    )
    assert "smtp.server is required" in _error(api={**FILE_AUTH, "two_fa_token_delivery": "smtp"})
    assert "invalid smtp.server" in _error(
        api={**FILE_AUTH, "two_fa_token_delivery": "smtp"}, smtp={"server": "smtp.example.com"}
    )
    assert "invalid smtp.sender_email" in _error(
        api={**FILE_AUTH, "two_fa_token_delivery": "smtp"},
        smtp={"server": "smtp.example.com:587", "sender_email": "nope"},
    )
    assert _load(
        api={**FILE_AUTH, "two_fa_token_delivery": "smtp"},
        smtp={"server": "smtp.example.com:587", "sender_email": "rport@example.com"},
    )
    url = {**FILE_AUTH, "two_fa_token_delivery": "https://hook.example.com/2fa"}
    assert "base_url is required for url two_fa_token_delivery" in _error(api=url)
    assert _load(api={**url, "base_url": "https://rport.example.com"})


def test_2fa_send_to_type() -> None:
    script = {**FILE_AUTH, "two_fa_token_delivery": "/usr/local/bin/2fa.sh"}
    assert 'invalid api.two_fa_send_to_type: "sms"' in _error(
        api={**script, "two_fa_send_to_type": "sms"}
    )
    assert "invalid api.two_fa_send_to_regex" in _error(
        api={**script, "two_fa_send_to_type": "regex", "two_fa_send_to_regex": "(["}
    )
    assert _load(api={**script, "two_fa_send_to_type": "regex", "two_fa_send_to_regex": "^\\d+$"})


# --- [logging] --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["warn", "INFO", "", "trace"])
def test_log_level_values(level: str) -> None:
    message = _error(logging={"log_level": level})
    assert "'logging.log_level'" in message and "invalid log level" in message


@pytest.mark.parametrize("level", ["error", "info", "debug"])
def test_log_level_ok(level: str) -> None:
    assert _load(logging={"log_level": level}).logging.log_level == level


# --- [server] ports, durations, URLs ------------------------------------------------------------


def test_ports_leaving_no_port() -> None:
    message = _error(server={"used_ports": ["80-90"], "excluded_ports": ["1-1024"]})
    assert message == (
        "invalid 'used_ports', 'excluded_ports': at least one port should be available for port "
        "assignment"
    )
    assert _error(server={"used_ports": []}).startswith("invalid 'used_ports', 'excluded_ports'")


@pytest.mark.parametrize(("key", "value"), [("used_ports", ["abc"]), ("excluded_ports", ["5-1"])])
def test_bad_port_spec(key: str, value: list[str]) -> None:
    assert f"'server.{key}'" in _error(server={key: value})


def test_check_port_timeout_max() -> None:
    message = _error(server={"check_port_timeout": "61s"})
    assert "'server.check_port_timeout'" in message
    assert "can not be more than 1m0s" in message
    assert _load(server={"check_port_timeout": "1m"}).server.check_port_timeout == 60.0


def test_check_clients_connection_interval_raised_with_warning() -> None:
    config = _load(server={"check_clients_connection_interval": "30s"})
    assert config.server.check_clients_connection_interval == 120.0
    assert any(
        "'check_clients_connection_interval' too fast" in w and "2m0s" in w for w in config.warnings
    )
    config = _load(server={"check_clients_connection_interval": "3m"})
    assert config.server.check_clients_connection_interval == 180.0
    assert config.warnings == []


@pytest.mark.parametrize("keep", ["500ms", "169h", "-1s"])
def test_keep_disconnected_clients_range_when_purging(keep: str) -> None:
    message = _error(server={"purge_disconnected_clients": True, "keep_disconnected_clients": keep})
    assert "'server.keep_disconnected_clients'" in message
    assert "[1s, 168h0m0s]" in message


@pytest.mark.parametrize("keep", ["0", "1s", "168h"])
def test_keep_disconnected_clients_ok(keep: str) -> None:
    assert _load(server={"purge_disconnected_clients": True, "keep_disconnected_clients": keep})


def test_keep_disconnected_clients_unchecked_without_purge() -> None:
    assert _load(server={"keep_disconnected_clients": "500h"})


def test_purge_interval_must_be_positive() -> None:
    message = _error(
        server={"purge_disconnected_clients": True, "purge_disconnected_clients_interval": "0s"}
    )
    assert "'server.purge_disconnected_clients_interval'" in message


def test_data_dir_must_not_be_empty() -> None:
    message = _error(server={"data_dir": ""})
    assert "'server.data_dir'" in message and "cannot be empty" in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://x.example.com", "schema must be http or https"),
        ("rport.example.com:8080", "schema must be http or https"),
        ("rport.example.com", "invalid URI for request"),
        ("http://", "must be absolute url"),
        ("http:/path", "must be absolute url"),
        ("/relative", "schema must be http or https"),
        ("http://x.example.com:port", "invalid url"),
    ],
)
def test_server_url_must_be_absolute_http(url: str, fragment: str) -> None:
    message = _error(server={"url": url})
    assert "'server.url'" in message and fragment in message


def test_pairing_url_validated() -> None:
    assert "'server.pairing_url'" in _error(server={"pairing_url": "pairing.example.com"})
    assert _load(server={"pairing_url": ""}).server.pairing_url == ""


def test_tunnel_proxy_rules() -> None:
    assert "'tunnel_proxy_key_file' must be set as well" in _error(
        server={"tunnel_proxy_cert_file": "/c"}
    )
    assert "'tunnel_proxy_cert_file' must be set as well" in _error(
        server={"tunnel_proxy_key_file": "/k"}
    )
    assert "cannot be used together" in _error(
        server={"tunnel_proxy_cert_file": "/c", "tunnel_proxy_key_file": "/k",
                "tunnel_enable_acme": True}
    )  # fmt: skip
    config = _load(server={"tunnel_proxy_cert_file": "/c", "tunnel_proxy_key_file": "/k"})
    assert config.server.tunnel_proxy_enabled


@pytest.mark.parametrize("host", ["tunnels.example.com", "10.0.0.1", "::1", "localhost"])
def test_tunnel_host_ok(host: str) -> None:
    assert _load(server={"tunnel_host": host}).server.tunnel_host == host


@pytest.mark.parametrize("host", ["bad host", "http://x.example.com", "-x.example.com"])
def test_tunnel_host_invalid(host: str) -> None:
    assert f"invalid tunnel_host '{host}': use IP address or FQDN" in _error(
        server={"tunnel_host": host}
    )


def test_max_concurrent_ssh_handshakes_at_least_one() -> None:
    assert "'server.max_concurrent_ssh_handshakes'" in _error(
        server={"max_concurrent_ssh_handshakes": 0}
    )


# --- [monitoring] -----------------------------------------------------------------------------


def test_monitoring_storage_at_least_one_hour() -> None:
    message = _error(monitoring={"data_storage_duration": "0h"})
    assert "'monitoring.data_storage_duration'" in message and "at least 1 hour" in message
    assert _load(monitoring={"data_storage_duration": "1h"})
    assert _load(monitoring={"data_storage_duration": "0h", "enabled": False})
