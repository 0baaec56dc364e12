"""rportd configuration: TOML file, command-line flags, defaults and validation."""

from rportd.config.flags import add_server_flags, flags_to_overrides
from rportd.config.loader import ConfigError, load_config, validate
from rportd.config.model import (
    ApiConfig,
    CaddyConfig,
    Config,
    DatabaseConfig,
    HAConfig,
    LoggingConfig,
    MetricsConfig,
    MonitoringConfig,
    NotificationsConfig,
    PushoverConfig,
    ServerConfig,
    SmtpConfig,
)
from rportd.config.types import (
    format_go_duration,
    parse_day_duration,
    parse_go_duration,
    parse_port_ranges,
    port_pool,
)

__all__ = [
    "ApiConfig",
    "CaddyConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "HAConfig",
    "LoggingConfig",
    "MetricsConfig",
    "MonitoringConfig",
    "NotificationsConfig",
    "PushoverConfig",
    "ServerConfig",
    "SmtpConfig",
    "add_server_flags",
    "flags_to_overrides",
    "format_go_duration",
    "load_config",
    "parse_day_duration",
    "parse_go_duration",
    "parse_port_ranges",
    "port_pool",
    "validate",
]
