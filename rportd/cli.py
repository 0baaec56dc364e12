"""Command line: ``rportd [flags]`` runs the server; ``rportd ha ...`` manages HA."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rportd import __version__
from rportd.config import Config, ConfigError, add_server_flags, flags_to_overrides, load_config
from rportd.logs import reopen_log, setup_logging
from rportd.systemd import Notifier

log = logging.getLogger("rportd")

EMBEDDED_DATA_DIR = "rportd-data"
_DEMO_FILE = "embedded-defaults.json"


def _server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rportd",
        description="rportd: RPort-compatible server with built-in high availability.",
    )
    parser.add_argument("--version", action="version", version=f"rportd {__version__}")
    add_server_flags(parser)
    return parser


def embedded_overrides(data_dir: Path) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    """Settings for a first run without any config: localhost only, demo credentials.

    The generated secrets are kept in ``data_dir`` so that the fingerprint and
    the credentials stay the same from one start to the next.
    """
    import bcrypt

    data_dir.mkdir(parents=True, exist_ok=True)
    state_file = data_dir / _DEMO_FILE
    if state_file.exists():
        state: dict[str, str] = json.loads(state_file.read_text())
    else:
        state = {
            "key_seed": secrets.token_hex(16),
            "jwt_secret": secrets.token_hex(32),
            "client_auth": f"demo-client:{secrets.token_urlsafe(12)}",
            "api_user": "admin",
            "api_password": secrets.token_urlsafe(12),
        }
        state_file.write_text(json.dumps(state, indent=1))
        state_file.chmod(0o600)
    users_file = data_dir / "api-users.json"
    if not users_file.exists():
        hashed = bcrypt.hashpw(state["api_password"].encode(), bcrypt.gensalt(10)).decode()
        users = [
            {
                "username": state["api_user"],
                "password": "$2y$" + hashed[4:],
                "groups": ["Administrators"],
            }
        ]
        users_file.write_text(json.dumps(users, indent=1))
        users_file.chmod(0o600)
    overrides: dict[str, dict[str, object]] = {
        "server": {
            "address": "127.0.0.1:8080",
            "data_dir": str(data_dir),
            "key_seed": state["key_seed"],
            "auth": state["client_auth"],
            "allow_root": True,
        },
        "api": {
            "address": "127.0.0.1:3000",
            "auth_file": str(users_file),
            "jwt_secret": state["jwt_secret"],
        },
    }
    return overrides, state


def _uses_embedded_defaults(
    ns: argparse.Namespace, overrides: dict[str, dict[str, object]]
) -> bool:
    if ns.config or Path("rportd.conf").exists():
        return False
    server = overrides.get("server", {})
    return not any(k in server for k in ("auth", "auth_file", "auth_table"))


async def _run(config: Config) -> int:
    from rportd.app import RportServer, StartupError

    server = RportServer(config)
    systemd = Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reopen_log)
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(server.reload_users()))
    try:
        await server.start()
    except StartupError as exc:
        log.error("%s", exc)
        systemd.notify(f"STATUS=cannot start: {exc}")
        return 1
    systemd.notify("READY=1")
    systemd.start_watchdog(lambda: not stop.is_set())
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        systemd.notify("STOPPING=1")
        await systemd.close()
        await server.stop()
    return 0


def run_server(argv: Sequence[str]) -> int:
    ns = _server_parser().parse_args(argv)
    overrides = flags_to_overrides(ns)
    demo: dict[str, str] | None = None
    if _uses_embedded_defaults(ns, overrides):
        data_dir = Path(str(overrides.get("server", {}).get("data_dir", EMBEDDED_DATA_DIR)))
        embedded, demo = embedded_overrides(data_dir)
        for section, values in embedded.items():
            overrides[section] = {**values, **overrides.get(section, {})}
    try:
        config = load_config(ns.config, overrides)
    except ConfigError as exc:
        print(f"rportd: configuration error: {exc}", file=sys.stderr)
        return 2
    from rportd.app import running_as_root

    if running_as_root() and not config.server.allow_root:
        print(
            "rportd: By default running as root is not allowed. "
            "Set [server] allow_root = true (or --allow-root) to permit it.",
            file=sys.stderr,
        )
        return 2
    setup_logging(config.logging)
    for warning in config.warnings:
        log.warning("%s", warning)
    if demo is not None:
        auth_id, _, password = demo["client_auth"].partition(":")
        print(
            "rportd: no configuration given, running on the embedded defaults "
            f"(localhost only, data in {config.server.data_dir}/)\n"
            f"  clients connect to   http://{config.server.address}  "
            f'with auth = "{auth_id}:{password}"\n'
            f"  API                  http://{config.api.address}/api/v1  "
            f"user {demo['api_user']} / password {demo['api_password']}\n"
            "  (write an rportd.conf or pass -c FILE to configure a real server)",
            flush=True,
        )
    return asyncio.run(_run(config))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "ha":
        from rportd.ha.cli import main as ha_main

        return ha_main(args[1:])
    if args and args[0] == "user":
        from rportd.auth.cli import main as user_main

        return user_main(args[1:])
    return run_server(args)
