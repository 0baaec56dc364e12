"""Loading (TOML file + command-line overrides + defaults) and validation of the config."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from rportd.config.model import (
    DAY_DURATION,
    DURATION,
    EXT_DURATION,
    KIND,
    SECRET_KEYS,
    SECTIONS,
    ApiConfig,
    Config,
)
from rportd.config.types import (
    format_go_duration,
    parse_day_duration,
    parse_extended_duration,
    parse_go_duration,
    port_pool,
)

log = logging.getLogger("rportd.config")

DEFAULT_CONFIG_FILE = "rportd.conf"

MAX_CHECK_PORT_TIMEOUT = 60.0
MIN_CHECK_CLIENTS_CONNECTION_INTERVAL = 120.0
MIN_KEEP_DISCONNECTED_CLIENTS = 1.0
MAX_KEEP_DISCONNECTED_CLIENTS = 7 * 24 * 3600.0
MAX_TOKEN_LIFETIME_HOURS = 2160
MIN_MONITORING_STORAGE = 3600.0

# Sections of the original that rportd knows but does not use (Plus is closed source).
# Without [plus-plugin] plugin_path (refused at start) they have no effect upstream either.
_IGNORED_SECTIONS = frozenset({"plus-license", "plus-oauth"})

# Deprecated [server] keys: alias -> (section attribute, new key). A non-zero alias wins.
_SERVER_ALIASES: dict[str, tuple[str, str]] = {
    "cleanup_lost_clients": ("server", "purge_disconnected_clients"),
    "keep_lost_clients": ("server", "keep_disconnected_clients"),
    "cleanup_clients_interval": ("server", "purge_disconnected_clients_interval"),
    "max_request_bytes": ("api", "max_request_bytes"),
    "max_filepush_size": ("api", "max_filepush_size"),
    "enable_ws_test_endpoints": ("api", "enable_ws_test_endpoints"),
}


class ConfigError(Exception):
    """A fatal configuration problem; the message names the key and what is allowed."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# --- type conversion -------------------------------------------------------------------------

_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true or false)",
    "list": "a list of strings (or a comma-separated string)",
    DURATION: 'a duration string such as "90s", "5m" or "1h"',
    EXT_DURATION: 'a duration string such as "12h", "7d" or "1w"',
    DAY_DURATION: 'a string such as "7d" or "12h"',
}


class _Field:
    """How one config key is converted."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _kind_of(hint: Any, metadata: Mapping[str, Any]) -> str:
    kind = metadata.get(KIND)
    if isinstance(kind, str):
        return kind
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is str:
        return "str"
    if typing.get_origin(hint) is list:
        return "list"
    raise TypeError(f"unsupported config field type {hint!r}")


def _schema(cls: type) -> dict[str, _Field]:
    hints = typing.get_type_hints(cls)
    result: dict[str, _Field] = {}
    for f in dataclasses.fields(cls):
        result[f.name] = _Field(_kind_of(hints[f.name], f.metadata))
    return result


_SECTION_CLASSES: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name in SECTIONS
}
_SCHEMAS: dict[str, dict[str, _Field]] = {
    attr: _schema(cls) for attr, cls in _SECTION_CLASSES.items()
}
_ALIAS_FIELDS: dict[str, _Field] = {
    "cleanup_lost_clients": _Field("bool"),
    "keep_lost_clients": _Field(DURATION),
    "cleanup_clients_interval": _Field(DURATION),
    "max_request_bytes": _Field("int"),
    "max_filepush_size": _Field("int"),
    "enable_ws_test_endpoints": _Field("bool"),
}


def _describe(value: object, secret: bool) -> str:
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "table",
    }.get(type(value), type(value).__name__)
    if secret:
        return f"a {kind}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    return f"{kind} {value!r}"


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def _convert(section: str, key: str, kind: str, value: object) -> Any:
    """Convert a raw TOML/flag value to the field's Python type or raise ConfigError."""
    name = f"{section}.{key}"

    def type_error() -> ConfigError:
        secret = (section, key) in SECRET_KEYS or key in ("auth", "db_password", "auth_password")
        return ConfigError(
            f"invalid '{name}': expected {_TYPE_NAMES[kind]}, got {_describe(value, secret)}",
            name,
        )

    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        if isinstance(value, str):
            return value
        if is_number:
            return _number_text(typing.cast(int | float, value))
        raise type_error()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise type_error()
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise type_error()
    if kind == "float":
        if is_number:
            return float(typing.cast(int | float, value))
        raise type_error()
    if kind == "list":
        if isinstance(value, str):
            return _split_list(value)
        if isinstance(value, list):
            items: list[str] = []
            for item in value:
                if isinstance(item, str):
                    items.append(item)
                elif isinstance(item, int | float) and not isinstance(item, bool):
                    items.append(_number_text(item))
                else:
                    raise type_error()
            return items
        raise type_error()
    if kind in (DURATION, EXT_DURATION):
        if not (isinstance(value, str) or is_number):
            raise type_error()
        parse = parse_go_duration if kind == DURATION else parse_extended_duration
        try:
            return parse(typing.cast(str | int | float, value))
        except ValueError as exc:
            raise ConfigError(f"invalid '{name}': {exc}", name) from None
    if kind == DAY_DURATION:
        if not isinstance(value, str):
            raise type_error()
        try:
            return parse_day_duration(value)
        except ValueError as exc:
            raise ConfigError(f"invalid '{name}': {exc}", name) from None
    raise AssertionError(f"unknown kind {kind}")


# --- layers ----------------------------------------------------------------------------------

_Layer = dict[str, dict[str, Any]]


def _convert_layer(
    raw: Mapping[str, Any], origin: str, warnings: list[str], *, strict: bool
) -> _Layer:
    """Convert one source (file or overrides) into typed values per section attribute.

    Deprecated aliases are mapped here, so an alias only wins over keys of the same source.
    Unknown sections/keys are logged (file) or rejected (``strict``, for overrides).
    """
    by_section = {toml_name: attr for attr, toml_name in SECTIONS.items()}
    layer: _Layer = {attr: {} for attr in SECTIONS}
    aliases: dict[str, Any] = {}
    for section_name, table in raw.items():
        attr = by_section.get(section_name)
        if attr is None and strict and section_name in SECTIONS:
            attr = section_name  # overrides may use the attribute name ("caddy")
        if attr is None:
            if strict:
                raise ConfigError(f"unknown config section '{section_name}' in {origin}")
            if section_name in _IGNORED_SECTIONS:
                log.debug("config: section [%s] is not supported and ignored", section_name)
            else:
                log.debug("config: unknown section [%s] ignored", section_name)
            continue
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"invalid '{section_name}': expected a table ([{section_name}]) in {origin}",
                section_name,
            )
        schema = _SCHEMAS[attr]
        for key, value in table.items():
            if attr == "server" and key in _SERVER_ALIASES:
                aliases[key] = _convert("server", key, _ALIAS_FIELDS[key].kind, value)
                continue
            spec = schema.get(key)
            if spec is None:
                if strict:
                    raise ConfigError(f"unknown config key '{section_name}.{key}' in {origin}")
                log.debug("config: unknown key '%s.%s' ignored", section_name, key)
                continue
            layer[attr][key] = _convert(SECTIONS[attr], key, spec.kind, value)
    for old, value in aliases.items():
        if not value:
            continue
        target_attr, new = _SERVER_ALIASES[old]
        layer[target_attr][new] = value
        if target_attr == "server":
            warnings.append(
                f"server setting '{old}' is deprecated and will be removed soon. "
                f"Use '{new}' instead."
            )
        else:
            warnings.append(
                f"server setting '{old}' is deprecated and will be removed soon. "
                "Use the setting in api section instead."
            )
    return layer


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"error parsing config file {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"error parsing config file {path}: not valid UTF-8: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"error reading config file {path}: {reason}") from None


def load_config(
    path: str | None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    *,
    search_cwd: bool = True,
    check: bool = True,
) -> Config:
    """Build the config from defaults, the TOML file and command-line overrides.

    ``path`` None: ``./rportd.conf`` if ``search_cwd`` and it exists, else no file.
    Overrides (``{"server": {"address": ...}}``) win over the file. Validates unless
    ``check`` is False. Raises ConfigError.
    """
    warnings: list[str] = []
    source: str | None = path
    if source is None and search_cwd and os.path.isfile(DEFAULT_CONFIG_FILE):
        source = DEFAULT_CONFIG_FILE
    layers: list[_Layer] = []
    if source is not None:
        layers.append(_convert_layer(_read_file(source), source, warnings, strict=False))
    if overrides:
        layers.append(_convert_layer(overrides, "command-line flags", warnings, strict=True))

    merged: dict[str, dict[str, Any]] = {attr: {} for attr in SECTIONS}
    for layer in layers:
        for attr, values in layer.items():
            merged[attr].update(values)

    sections = {attr: cls(**merged[attr]) for attr, cls in _SECTION_CLASSES.items()}
    config = Config(**sections, source_path=source, warnings=warnings)

    if config.monitoring.data_storage_days > 0:
        config.warnings.append(
            "monitoring setting 'data_storage_days' is deprecated and will be removed soon. "
            "Use 'data_storage_duration' only instead."
        )
    _apply_derived(config)
    if check:
        validate(config)
    return config


def _apply_derived(config: Config) -> None:
    """Fill values that depend on others (default url, deprecated data_storage_days)."""
    if not config.server.url:
        config.server.url = [f"http://{config.server.address}"]
    if config.monitoring.data_storage_days > 0:
        config.monitoring.data_storage_duration = config.monitoring.data_storage_days * 86400.0


# --- validation ------------------------------------------------------------------------------

_DNS_NAME_RE = re.compile(
    r"^([a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})*[._]?$"
)


def _url_problem(text: str) -> str | None:
    """Why ``text`` is not an absolute http(s) URL, or None (upstream's wording)."""
    if not text or any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        return f"invalid url {text}: invalid URI for request"
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        return f"invalid url {text}: {exc}"
    if not parts.scheme and not text.startswith("/"):
        return f"invalid url {text}: invalid URI for request"
    if parts.scheme not in ("http", "https"):
        return f"invalid url {text}: schema must be http or https"
    if not parts.netloc or not host:
        return f"invalid url {text}, must be absolute url"
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_dns_name(text: str) -> bool:
    if not text or len(text.replace(".", "")) > 255 or _is_ip(text):
        return False
    return _DNS_NAME_RE.match(text) is not None


def _host_port_ok(text: str) -> bool:
    """Like Go's net.SplitHostPort succeeding."""
    host, sep, _ = text.rpartition(":")
    if not sep:
        return False
    if host.startswith("["):
        return host.endswith("]") and "[" not in host[1:] and "]" not in host[:-1]
    return ":" not in host and "[" not in host and "]" not in host


def validate(config: Config) -> None:
    """Check every fatal rule of the original; raise ConfigError for the first violation.

    Also normalises: fills the default ``url`` and raises a too small
    ``check_clients_connection_interval`` to 2m (adding to ``config.warnings``).
    """
    _apply_derived(config)
    server = config.server
    _validate_logging(config)
    _validate_server_urls(config)
    _validate_ports(config)
    _validate_tunnel_proxy(config)
    if not server.data_dir:
        raise ConfigError(
            "invalid 'server.data_dir': 'data directory path' cannot be empty", "server.data_dir"
        )
    keep = server.keep_disconnected_clients
    if (
        server.purge_disconnected_clients
        and keep != 0
        and not MIN_KEEP_DISCONNECTED_CLIENTS <= keep <= MAX_KEEP_DISCONNECTED_CLIENTS
    ):
        raise ConfigError(
            "invalid 'server.keep_disconnected_clients': expected 'Keep Lost Clients' can be in "
            f"range [{format_go_duration(MIN_KEEP_DISCONNECTED_CLIENTS)}, "
            f"{format_go_duration(MAX_KEEP_DISCONNECTED_CLIENTS)}], "
            f"actual: {format_go_duration(keep)}",
            "server.keep_disconnected_clients",
        )
    if server.purge_disconnected_clients and server.purge_disconnected_clients_interval <= 0:
        raise ConfigError(
            "invalid 'server.purge_disconnected_clients_interval': must be greater than 0, "
            f"got {format_go_duration(server.purge_disconnected_clients_interval)}",
            "server.purge_disconnected_clients_interval",
        )
    _validate_client_auth(config)
    _validate_api(config)
    _validate_database(config)
    _validate_server_limits(config)
    _validate_monitoring(config)
    _validate_ha(config)
    _validate_metrics(config)


def _validate_logging(config: Config) -> None:
    level = config.logging.log_level
    if level not in ("error", "info", "debug"):
        raise ConfigError(
            f"invalid 'logging.log_level': invalid log level: \"{level}\" "
            '(expected "error", "info" or "debug")',
            "logging.log_level",
        )
    log_format = config.logging.log_format
    if log_format not in ("text", "json"):
        raise ConfigError(
            f'invalid \'logging.log_format\': "{log_format}" (expected "text" or "json")',
            "logging.log_format",
        )


def _validate_metrics(config: Config) -> None:
    address = config.metrics.address
    if address and not _host_port_ok(address):
        raise ConfigError(
            f'invalid \'metrics.address\' "{address}": expected host:port, e.g. "127.0.0.1:9103"',
            "metrics.address",
        )


def _validate_server_urls(config: Config) -> None:
    for url in config.server.url:
        problem = _url_problem(url)
        if problem:
            raise ConfigError(f"invalid 'server.url': {problem}", "server.url")
    if config.server.pairing_url:
        problem = _url_problem(config.server.pairing_url)
        if problem:
            raise ConfigError(f"invalid 'server.pairing_url': {problem}", "server.pairing_url")


def _validate_ports(config: Config) -> None:
    server = config.server
    for key, value in (
        ("used_ports", server.used_ports),
        ("excluded_ports", server.excluded_ports),
    ):
        try:
            port_pool(value, [])
        except ValueError as exc:
            raise ConfigError(f"can't parse 'server.{key}': {exc}", f"server.{key}") from None
    if not server.allowed_ports():
        raise ConfigError(
            "invalid 'used_ports', 'excluded_ports': at least one port should be available "
            "for port assignment",
            "server.used_ports",
        )


def _validate_tls_min(value: str, name: str, prefix: str = "") -> None:
    if value not in ("", "1.2", "1.3"):
        raise ConfigError(
            f"{prefix}invalid '{name}' \"{value}\": TLS must be either 1.2 or 1.3", name
        )


def _validate_tunnel_proxy(config: Config) -> None:
    server = config.server
    cert, key = server.tunnel_proxy_cert_file, server.tunnel_proxy_key_file
    if cert and not key:
        raise ConfigError(
            "when 'tunnel_proxy_cert_file' is set, 'tunnel_proxy_key_file' must be set as well",
            "server.tunnel_proxy_key_file",
        )
    if key and not cert:
        raise ConfigError(
            "when 'tunnel_proxy_key_file' is set, 'tunnel_proxy_cert_file' must be set as well",
            "server.tunnel_proxy_cert_file",
        )
    if server.tunnel_enable_acme and cert:
        raise ConfigError(
            "tunnel_proxy_cert_file, tunnel_proxy_key_file and tunnel_enable_acme cannot be "
            "used together",
            "server.tunnel_enable_acme",
        )
    if server.tunnel_host and not (_is_dns_name(server.tunnel_host) or _is_ip(server.tunnel_host)):
        raise ConfigError(
            f"invalid tunnel_host '{server.tunnel_host}': use IP address or FQDN",
            "server.tunnel_host",
        )
    _validate_tls_min(server.tls_min, "server.tls_min")


def _validate_client_auth(config: Config) -> None:
    server = config.server
    if not (server.auth or server.auth_file or server.auth_table):
        raise ConfigError(
            "client authentication must be enabled: set either 'auth', 'auth_file' or 'auth_table'",
            "server.auth",
        )
    for a, b in (("auth_file", "auth"), ("auth_file", "auth_table"), ("auth", "auth_table")):
        if getattr(server, a) and getattr(server, b):
            raise ConfigError(
                f"'{a}' and '{b}' are both set: expected only one of them", f"server.{a}"
            )
    if server.auth_table and not config.database.db_type:
        raise ConfigError("'db_type' must be set when 'auth_table' is set", "database.db_type")
    creds = server.client_auth_credentials()
    if creds is not None and not (creds[0] and creds[1]):
        raise ConfigError(
            "invalid 'server.auth': invalid client auth credentials, expected "
            "'<client-id>:<password>'",
            "server.auth",
        )


def _api_error(message: str, key: str) -> ConfigError:
    return ConfigError(f"API: {message}", key)


def _validate_api(config: Config) -> None:
    api = config.api
    if api.enabled:
        _validate_api_auth(config)
        if api.enable_acme and not urlsplit(api.base_url).hostname:
            raise _api_error("base_url must have a host when acme is enabled", "api.base_url")
        if api.cert_file and not api.key_file:
            raise _api_error(
                "when 'cert_file' is set, 'key_file' must be set as well", "api.key_file"
            )
        if api.key_file and not api.cert_file:
            raise _api_error(
                "when 'key_file' is set, 'cert_file' must be set as well", "api.cert_file"
            )
        if api.cert_file and api.enable_acme:
            raise _api_error(
                "cert_file, key_file and enable_acme cannot be used together", "api.enable_acme"
            )
        _validate_2fa(config)
        if api.two_fa_token_delivery and api.totp_enabled:
            raise _api_error(
                "conflicting 2FA configuration, two factor auth and totp_enabled options cannot "
                "be both enabled",
                "api.totp_enabled",
            )
        _validate_tls_min(api.tls_min, "api.tls_min", "API: ")
        if not 0 <= api.max_token_lifetime <= MAX_TOKEN_LIFETIME_HOURS:
            raise _api_error(
                "max_token_lifetime outside allowable ranges. must be between 0 and "
                f"{MAX_TOKEN_LIFETIME_HOURS}",
                "api.max_token_lifetime",
            )
        if not -1 <= api.password_zxcvbn_minscore <= 4:
            raise _api_error(
                "invalid 'api.password_zxcvbn_minscore': must be between -1 and 4, got "
                f"{api.password_zxcvbn_minscore}",
                "api.password_zxcvbn_minscore",
            )
    elif api.doc_root:
        raise _api_error("to use document root you need to specify API address", "api.doc_root")
    if api.enable_audit_log and api.audit_log_rotation not in (
        "daily",
        "weekly",
        "monthly",
        "yearly",
    ):
        raise _api_error(
            f'invalid api.audit_log_rotation: "{api.audit_log_rotation}" '
            '(expected "daily", "weekly", "monthly" or "yearly")',
            "api.audit_log_rotation",
        )


def _validate_api_auth(config: Config) -> None:
    api = config.api
    if not (api.auth or api.auth_file or api.auth_user_table):
        raise _api_error(
            "authentication must be enabled: set either 'auth', 'auth_file' or 'auth_user_table'",
            "api.auth",
        )
    for a, b in (
        ("auth_file", "auth"),
        ("auth_user_table", "auth"),
        ("auth_user_table", "auth_file"),
    ):
        if getattr(api, a) and getattr(api, b):
            raise _api_error(f"'{a}' and '{b}' are both set: expected only one of them", f"api.{a}")
    if api.auth_user_table and not api.auth_group_table:
        raise _api_error(
            "when 'auth_user_table' is set, 'auth_group_table' must be set as well",
            "api.auth_group_table",
        )
    if api.auth_user_table and not config.database.db_type:
        raise _api_error("'db_type' must be set when 'auth_user_table' is set", "database.db_type")
    if api.auth_header:
        if api.auth:
            raise _api_error(
                "'auth_header' cannot be used with single user 'auth'", "api.auth_header"
            )
        if not api.user_header:
            raise _api_error(
                "'user_header' must be set when 'auth_header' is set", "api.user_header"
            )
    if not api.auth_header:
        defaults = ApiConfig()
        idle = [
            key
            for key in ("user_header", "create_missing_users", "default_user_group")
            if getattr(api, key) != getattr(defaults, key)
        ]
        if idle:
            config.warnings.append(
                f"API: {', '.join(repr(k) for k in idle)} only apply to logins through a "
                "reverse proxy: set 'auth_header' too, or remove them"
            )
    if api.auth:
        user, _, password = api.auth.partition(":")
        if not user or not password:
            raise _api_error(
                "invalid 'api.auth': invalid auth format: expected <user>:<password>", "api.auth"
            )


def _validate_2fa(config: Config) -> None:
    api = config.api
    delivery = api.two_fa_token_delivery
    if not delivery:
        return
    if api.auth:
        raise _api_error(
            "2FA is not available if you use a single static user-password pair",
            "api.two_fa_token_delivery",
        )
    if delivery == "pushover":
        if not config.pushover.api_token:
            raise _api_error("pushover.api_token is required", "pushover.api_token")
        return
    if delivery == "smtp":
        smtp = config.smtp
        if not smtp.server:
            raise _api_error("smtp.server is required", "smtp.server")
        if not _host_port_ok(smtp.server):
            raise _api_error(
                "invalid smtp.server, expected to be server and port separated by a colon. "
                "e.g. 'smtp.gmail.com:587'",
                "smtp.server",
            )
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", smtp.sender_email or ""):
            raise _api_error(
                f'invalid smtp.sender_email: "{smtp.sender_email}" is not a valid email address',
                "smtp.sender_email",
            )
        return
    if urlsplit(delivery).scheme in ("http", "https"):
        problem = _url_problem(delivery)
        if problem:
            raise _api_error(
                f"invalid 'api.two_fa_token_delivery': {problem}", "api.two_fa_token_delivery"
            )
        if not api.base_url:
            raise _api_error("base_url is required for url two_fa_token_delivery", "api.base_url")
        return
    # Otherwise an executable (script delivery); its existence is checked at start-up.
    if api.two_fa_send_to_type not in ("none", "email", "regex"):
        raise _api_error(
            f'invalid api.two_fa_send_to_type: "{api.two_fa_send_to_type}" '
            '(expected "none", "email" or "regex")',
            "api.two_fa_send_to_type",
        )
    if api.two_fa_send_to_type == "regex":
        try:
            re.compile(api.two_fa_send_to_regex)
        except re.error as exc:
            raise _api_error(
                f"invalid api.two_fa_send_to_regex: {exc}", "api.two_fa_send_to_regex"
            ) from None


def _validate_database(config: Config) -> None:
    database = config.database
    db_type = database.db_type
    if db_type not in ("", "mysql", "postgres", "sqlite"):
        raise ConfigError(
            f"invalid 'db_type', expected 'mysql', 'postgres' or 'sqlite', got \"{db_type}\"",
            "database.db_type",
        )
    if database.on_server:
        try:
            database.endpoint()
        except ValueError as exc:
            raise ConfigError(
                f"invalid 'db_host' {database.db_host!r}: {exc}", "database.db_host"
            ) from None


def _validate_server_limits(config: Config) -> None:
    server = config.server
    if server.max_concurrent_ssh_handshakes < 1:
        raise ConfigError(
            "invalid 'server.max_concurrent_ssh_handshakes': must be at least 1, got "
            f"{server.max_concurrent_ssh_handshakes}",
            "server.max_concurrent_ssh_handshakes",
        )
    procs = os.cpu_count() or 1
    if server.max_concurrent_ssh_handshakes > procs * 2:
        config.warnings.append(
            "allowing too many concurrent ssh handshakes ('max_concurrent_ssh_handshakes') "
            "will slow down the server significantly and cause operational reliability issues. "
            f"Please use a value less than or equal to the number of CPUs ({procs})"
        )
    if server.check_clients_connection_interval < MIN_CHECK_CLIENTS_CONNECTION_INTERVAL:
        server.check_clients_connection_interval = MIN_CHECK_CLIENTS_CONNECTION_INTERVAL
        config.warnings.append(
            "'check_clients_connection_interval' too fast. Using the minimum possible of "
            f"{format_go_duration(MIN_CHECK_CLIENTS_CONNECTION_INTERVAL)}"
        )
    if server.check_port_timeout > MAX_CHECK_PORT_TIMEOUT:
        raise ConfigError(
            "invalid 'server.check_port_timeout': 'check_port_timeout' can not be more than "
            f"{format_go_duration(MAX_CHECK_PORT_TIMEOUT)}, got "
            f"{format_go_duration(server.check_port_timeout)}",
            "server.check_port_timeout",
        )


def _validate_monitoring(config: Config) -> None:
    mon = config.monitoring
    if mon.enabled and mon.data_storage_duration < MIN_MONITORING_STORAGE:
        raise ConfigError(
            "invalid 'monitoring.data_storage_duration': monitoring results must be stored "
            "for at least 1 hour",
            "monitoring.data_storage_duration",
        )


def _validate_ha(config: Config) -> None:
    ha = config.ha
    if ha.role not in ("primary", "secondary"):
        raise ConfigError(
            f'invalid \'ha.role\' "{ha.role}": expected "primary" or "secondary"', "ha.role"
        )
    for peer in ha.peers:
        problem = _url_problem(peer)
        if problem:
            raise ConfigError(f"invalid 'ha.peers': {problem}", "ha.peers")
    if ha.primary:
        problem = _url_problem(ha.primary)
        if problem:
            raise ConfigError(f"invalid 'ha.primary': {problem}", "ha.primary")
    if ha.role == "secondary":
        if not ha.primary:
            raise ConfigError(
                "invalid 'ha.primary': must be set when 'ha.role' is \"secondary\"", "ha.primary"
            )
        if not ha.cluster_secret:
            raise ConfigError(
                "invalid 'ha.cluster_secret': must be set when 'ha.role' is \"secondary\"",
                "ha.cluster_secret",
            )
    if ha.peers and not ha.cluster_secret:
        raise ConfigError(
            "invalid 'ha.cluster_secret': must be set when 'ha.peers' is not empty",
            "ha.cluster_secret",
        )
    if ha.drain_grace < 0:
        raise ConfigError("invalid 'ha.drain_grace': must not be negative", "ha.drain_grace")
    if not 0 < ha.knock_hold <= 25:
        raise ConfigError(
            "invalid 'ha.knock_hold': must be more than 0s and at most 25s (the rport client "
            f"waits 30s for an answer), got {format_go_duration(ha.knock_hold)}",
            "ha.knock_hold",
        )
    if ha.takeover_after <= 0:
        raise ConfigError(
            "invalid 'ha.takeover_after': must be greater than 0, got "
            f"{format_go_duration(ha.takeover_after)}",
            "ha.takeover_after",
        )
    if ha.synchronous_timeout <= 0:
        raise ConfigError(
            "invalid 'ha.synchronous_timeout': must be greater than 0, got "
            f"{format_go_duration(ha.synchronous_timeout)}",
            "ha.synchronous_timeout",
        )
    if ha.synchronous and not ha.enabled:
        raise ConfigError(
            "invalid 'ha.synchronous': true needs a secondary to acknowledge writes; "
            "list it in 'ha.peers' (or set synchronous = false)",
            "ha.synchronous",
        )
    _validate_coordinator(config)


MIN_COORDINATOR_TTL = 2.0  # etcd's smallest lease TTL with its default 1 s election timeout


def _validate_coordinator(config: Config) -> None:
    ha = config.ha
    for url in ha.coordinator:
        problem = _url_problem(url)
        if problem is None:
            parts = urlsplit(url)
            if parts.username is not None or parts.password is not None:
                problem = (
                    f"invalid url {parts.scheme}://{parts.hostname}: etcd user names and "
                    "passwords are not supported; keep etcd's client port reachable only "
                    "from the rportd nodes"
                )
            elif parts.path not in ("", "/") or parts.query or parts.fragment:
                problem = (
                    f"invalid url {url}: give only scheme, host and port of an etcd member "
                    '(such as "http://10.0.0.5:2379")'
                )
        if problem:
            raise ConfigError(f"invalid 'ha.coordinator': {problem}", "ha.coordinator")
    ttl = ha.coordinator_ttl
    if ttl < MIN_COORDINATOR_TTL or not float(ttl).is_integer():
        raise ConfigError(
            "invalid 'ha.coordinator_ttl': must be whole seconds, at least "
            f"{format_go_duration(MIN_COORDINATOR_TTL)} (etcd counts lease TTLs in seconds), "
            f"got {format_go_duration(ttl)}",
            "ha.coordinator_ttl",
        )
    if 0 < len(ha.coordinator) < 3:
        config.warnings.append(
            f"'ha.coordinator' lists {len(ha.coordinator)} etcd member(s): with fewer than 3, "
            "losing one stops every node from serving clients"
        )


__all__ = ["ConfigError", "load_config", "validate"]
