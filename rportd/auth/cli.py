"""``rportd user add|change|delete``: manage API users in the configured source.

Works on the user file or tables directly (the server need not run), as
upstream's command does. Passwords are asked twice on a terminal, or read as
two lines from standard input otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from rportd.auth.accounts import AccountError, AccountService, UserChange
from rportd.auth.users import DbUserStore, FileUserStore, UserStore
from rportd.config import Config, ConfigError, load_config
from rportd.store.database import SqlDatabase
from rportd.store.external import DatabaseError, external_database


class PasswordsDiffer(Exception):
    """The two password entries were not the same."""


def read_password() -> str:
    """Ask for a password twice (or read two lines when not on a terminal)."""
    if sys.stdin.isatty():
        first = getpass.getpass("Enter password: ")
        second = getpass.getpass("Confirm password: ")
    else:
        first = sys.stdin.readline().rstrip("\n")
        second = sys.stdin.readline().rstrip("\n")
    if first != second:
        raise PasswordsDiffer("passwords do not match")
    return first


async def _store(config: Config) -> tuple[UserStore, SqlDatabase | None]:
    api = config.api
    if api.auth_file:
        store = FileUserStore(api.auth_file)
        await store.load()
        return store, None
    if api.auth_user_table:
        db = external_database(config.database, wal=config.server.sqlite_wal)
        try:
            await db.open()
            db_store = DbUserStore(
                db,
                api.auth_user_table,
                api.auth_group_table,
                api.auth_group_details_table,
                with_two_fa=bool(api.two_fa_token_delivery),
                with_totp=api.totp_enabled,
            )
            await db_store.load()
        except BaseException:
            await db.close()
            raise
        return db_store, db
    raise ConfigError(
        "rportd user needs [api] auth_file or auth_user_table; a static [api] auth user "
        "cannot be changed"
    )


async def _run(config: Config, ns: argparse.Namespace) -> str:
    store, db = await _store(config)
    try:
        accounts = AccountService(
            store,
            None,
            password_min_length=config.api.password_min_length,
            zxcvbn_min_score=config.api.password_zxcvbn_minscore,
            two_fa_on=bool(config.api.two_fa_token_delivery),
        )
        groups = [g for part in ns.group or [] for g in part.split(",") if g] or None
        if ns.command == "add":
            change = UserChange(
                username=ns.username,
                password=read_password(),
                groups=groups,
                two_fa_send_to=ns.two_fa_sendto or "",
            )
            await accounts.create_user(change)
            return "User added successfully."
        if ns.command == "change":
            change = UserChange(
                password=read_password() if ns.password else "",
                groups=groups,
                two_fa_send_to=ns.two_fa_sendto or "",
            )
            await accounts.update_user(ns.username, change)
            return "User changed successfully."
        await accounts.delete_user(ns.username)
        return "User deleted successfully."
    finally:
        if db is not None:
            await db.close()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rportd user", description="Add, change or delete API users."
    )
    parser.add_argument("command", choices=("add", "change", "delete"))
    parser.add_argument("-c", "--config", help="rportd.conf (default: ./rportd.conf)")
    parser.add_argument("-u", "--username", required=True, help="username [required]")
    parser.add_argument("-g", "--group", action="append", help="group(s), comma separated")
    parser.add_argument("--2fa-sendto", dest="two_fa_sendto", help="where 2FA codes go")
    parser.add_argument("-p", "--password", action="store_true", help="change the password")
    ns = parser.parse_args(list(argv))
    try:
        config = load_config(ns.config)
        message = asyncio.run(_run(config, ns))
    except ConfigError as exc:
        print(f"Invalid config: {exc}. See rportd --help", file=sys.stderr)
        return 2
    except AccountError as exc:
        reasons = "; ".join(f"{t}: {d}" if d else t for t, d in exc.items)
        print(f"Could not {ns.command} user: {reasons}", file=sys.stderr)
        return 1
    except (PasswordsDiffer, ValueError, DatabaseError) as exc:
        print(f"Could not {ns.command} user: {exc}", file=sys.stderr)
        return 1
    print(message)
    if config.api.auth_file:
        print("Reload rportd (SIGUSR1, systemctl reload rportd) or restart it to use the change.")
    return 0
