"""Command-line flags of the original ``rportd`` and their mapping to config keys."""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Sequence
from typing import Any

# (flags, config key, kind); kind: "str", "int", "bool", "list", "duration".
_FLAGS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("-a", "--addr"), "server.address", "str"),
    (("--url",), "server.url", "str"),
    (("--key",), "server.key_seed", "str"),
    (("--auth",), "server.auth", "str"),
    (("--authfile",), "server.auth_file", "str"),
    (("--auth-table",), "server.auth_table", "str"),
    (("--auth-write",), "server.auth_write", "bool"),
    (("--auth-multiuse-creds",), "server.auth_multiuse_creds", "bool"),
    (("--equate-clientauthid-clientid",), "server.equate_clientauthid_clientid", "bool"),
    (("--proxy",), "server.proxy", "str"),
    (("--use-ports",), "server.used_ports", "list"),
    (("-e", "--exclude-ports"), "server.excluded_ports", "list"),
    (("--data-dir",), "server.data_dir", "str"),
    (("--max-request-bytes-client",), "server.max_request_bytes_client", "int"),
    (("--check-port-timeout",), "server.check_port_timeout", "duration"),
    (("--run-remote-cmd-timeout-sec",), "server.run_remote_cmd_timeout_sec", "int"),
    (("--allow-root",), "server.allow_root", "bool"),
    (("--tunnel-proxy-cert-file",), "server.tunnel_proxy_cert_file", "str"),
    (("--tunnel-proxy-key-file",), "server.tunnel_proxy_key_file", "str"),
    (("--novnc-root",), "server.novnc_root", "str"),
    (("--guacd-address",), "server.guacd_address", "str"),
    (("-l", "--log-file"), "logging.log_file", "str"),
    (("--log-level",), "logging.log_level", "str"),
    (("--api-addr",), "api.address", "str"),
    (("--api-auth",), "api.auth", "str"),
    (("--api-authfile",), "api.auth_file", "str"),
    (("--api-auth-user-table",), "api.auth_user_table", "str"),
    (("--api-auth-group-table",), "api.auth_group_table", "str"),
    (("--api-jwt-secret",), "api.jwt_secret", "str"),
    (("--api-doc-root",), "api.doc_root", "str"),
    (("--api-cert-file",), "api.cert_file", "str"),
    (("--api-key-file",), "api.key_file", "str"),
    (("--api-access-log-file",), "api.access_log_file", "str"),
    (("--max-request-bytes",), "api.max_request_bytes", "int"),
    (("--max-filepush-bytes",), "api.max_filepush_size", "int"),
    (("--db-type",), "database.db_type", "str"),
    (("--db-name",), "database.db_name", "str"),
    (("--db-host",), "database.db_host", "str"),
    (("--db-user",), "database.db_user", "str"),
    (("--db-password",), "database.db_password", "str"),
    (("--monitoring-data-storage-days",), "monitoring.data_storage_days", "int"),
)

FLAG_KEYS: frozenset[str] = frozenset(key for _, key, _ in _FLAGS)

_IGNORED_DEST = "_ignored_save_clients_interval"

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Parse a bool like Go's strconv.ParseBool (as pflag does)."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}: expected true or false")


def parse_int(text: str) -> int:
    """Parse an integer like Go's strconv.ParseInt(s, 0, 64) (as pflag does)."""
    try:
        return int(text, 0)
    except ValueError:
        if re.fullmatch(r"[+-]?0[0-7]+", text):
            return int(text, 8)
    raise argparse.ArgumentTypeError(f"invalid integer value {text!r}")


def split_list(text: str) -> list[str]:
    """Split a comma-separated flag value (CSV quoting allowed, like pflag StringSlice)."""
    if not text.strip():
        return []
    try:
        row = next(csv.reader([text]))
    except csv.Error as exc:
        raise argparse.ArgumentTypeError(f"invalid list value {text!r}: {exc}") from None
    return [item.strip() for item in row if item.strip()]


class _ListAction(argparse.Action):
    """First use replaces the default, later uses append (pflag StringSlice)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        current = list(getattr(namespace, self.dest, None) or [])
        current.extend(values if isinstance(values, list) else [])
        setattr(namespace, self.dest, current)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Add the original rportd's flags (§12 of config.md); only given flags are set."""
    parser.add_argument(
        "-c", "--config", dest="config", default=None, metavar="PATH",
        help="path of the TOML config file (default: ./rportd.conf if present)",
    )  # fmt: skip
    for names, key, kind in _FLAGS:
        help_text = f"overrides '{key}'"
        if kind == "bool":
            parser.add_argument(
                *names, dest=key, nargs="?", const=True, type=parse_bool,
                default=argparse.SUPPRESS, metavar="BOOL", help=help_text,
            )  # fmt: skip
        elif kind == "int":
            parser.add_argument(
                *names, dest=key, type=parse_int, default=argparse.SUPPRESS, metavar="N",
                help=help_text,
            )  # fmt: skip
        elif kind == "list":
            parser.add_argument(
                *names, dest=key, type=split_list, action=_ListAction,
                default=argparse.SUPPRESS, metavar="PORTS", help=help_text + " (comma list)",
            )  # fmt: skip
        else:
            metavar = "DURATION" if kind == "duration" else "VALUE"
            parser.add_argument(
                *names, dest=key, default=argparse.SUPPRESS, metavar=metavar, help=help_text,
            )  # fmt: skip
    parser.add_argument(
        "--save-clients-interval", dest=_IGNORED_DEST, default=argparse.SUPPRESS,
        metavar="DURATION", help="accepted for compatibility; ignored",
    )  # fmt: skip


def flags_to_overrides(ns: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Map the given flags to ``{"section": {"key": value}}`` config overrides."""
    result: dict[str, dict[str, object]] = {}
    for dest, value in vars(ns).items():
        if dest not in FLAG_KEYS:
            continue
        section, key = dest.split(".", 1)
        result.setdefault(section, {})[key] = list(value) if isinstance(value, list) else value
    return result
