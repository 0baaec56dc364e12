"""``rportd user add|change|delete`` on the configured user file."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import bcrypt

from tests.dbservers import TestDatabase

REPO = Path(__file__).resolve().parents[2]


async def run_user(config: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rportd",
        "user",
        *args,
        "-c",
        str(config),
        cwd=str(REPO),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_conf(tmp_path: Path, users: str, more: str = "") -> Path:
    """rportd.conf with the API users from ``users`` (lines of ``[api]``) and ``more``."""
    config = tmp_path / "rportd.conf"
    config.write_text(
        f"""[server]
  auth = "c:secret"
  data_dir = "{tmp_path}/data"
[api]
  address = "127.0.0.1:0"
{users}
{more}"""
    )
    return config


def write_config(tmp_path: Path) -> tuple[Path, Path]:
    users = tmp_path / "api-users.json"
    users.write_text("[]")
    return write_conf(tmp_path, f'  auth_file = "{users}"'), users


async def test_add_change_delete(tmp_path: Path) -> None:
    config, users = write_config(tmp_path)
    pw = "a-long-password-1"
    code, out, err = await run_user(
        config, "add", "-u", "bob", "-g", "ops,Administrators", stdin=f"{pw}\n{pw}\n"
    )
    assert code == 0, err
    assert "User added successfully." in out
    [bob] = json.loads(users.read_text())
    assert bob["username"] == "bob" and bob["groups"] == ["ops", "Administrators"]
    assert bob["password"].startswith("$2y$")
    assert bcrypt.checkpw(pw.encode(), ("$2b$" + bob["password"][4:]).encode())

    new = "another-long-password"
    code, out, err = await run_user(config, "change", "-u", "bob", "-p", stdin=f"{new}\n{new}\n")
    assert code == 0, err
    [bob] = json.loads(users.read_text())
    assert bcrypt.checkpw(new.encode(), ("$2b$" + bob["password"][4:]).encode())

    code, out, err = await run_user(config, "delete", "-u", "bob")
    assert (code, json.loads(users.read_text())) == (0, [])
    assert "User deleted successfully." in out


async def test_refusals_say_why(tmp_path: Path) -> None:
    config, users = write_config(tmp_path)
    code, _, err = await run_user(config, "add", "-u", "bob", stdin="short\nshort\n")
    assert code == 1
    assert "Could not add user: Your password is too short" in err
    code, _, err = await run_user(config, "add", "-u", "bob", stdin="a-long-password-1\nother\n")
    assert (code, "passwords do not match" in err) == (1, True)
    code, _, err = await run_user(config, "delete", "-u", "nobody")
    assert code == 1 and "cannot find user by username 'nobody'" in err
    assert json.loads(users.read_text()) == []


async def test_add_to_database_tables(server_db: TestDatabase, tmp_path: Path) -> None:
    """``rportd user add`` writes to the tables of a MariaDB or PostgreSQL ``[database]``."""
    db = server_db
    await db.create_tables()
    database = "\n".join(f"  {k} = {json.dumps(v)}" for k, v in db.section.items())
    tables = '  auth_user_table = "users"\n  auth_group_table = "groups"'
    config = write_conf(tmp_path, tables, f"[database]\n{database}\n")
    pw = "a-long-password-1"
    code, out, err = await run_user(config, "add", "-u", "bob", "-g", "ops", stdin=f"{pw}\n{pw}\n")
    assert code == 0 and "User added successfully." in out, err
    [(hashed,)] = await db.run("SELECT password FROM users WHERE username = 'bob'")
    assert bcrypt.checkpw(pw.encode(), ("$2b$" + hashed[4:]).encode())
    assert await db.run(f"SELECT {db.q('group')} FROM {db.q('groups')}") == [("ops",)]
