"""The real client authenticating from `[server] auth_table` in a real MariaDB or PostgreSQL.

The database servers are Debian's packages, started as the test suite starts them
(tests/dbservers.py); the tables are deploy/external-db/<engine>.sql.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp

from tests import dbservers

from .checks import CheckFailed, Context, expect, poll, wait_connected
from .extra import refused_client
from .procs import CLIENT_AUTH, Client, Server, free_port

Step = tuple[str, str, bool, str, float]  # engine/server, step, ok, detail, seconds


def _server_for(db: dbservers.TestDatabase, root: Path, kind: str, binary: str) -> Server:
    server = Server(root / f"{kind}-{db.engine}-server", kind=kind, binary=binary)
    conf = server.config()
    del conf["server"]["auth"]
    conf["server"]["auth_table"] = "clients_auth"
    conf["database"] = dict(db.section)
    server.base = conf
    return server


async def _steps(
    db: dbservers.TestDatabase, server: Server, rport: str, root: Path, http: aiohttp.ClientSession
) -> list[tuple[str, bool, str]]:
    """Right password, wrong password, and a credential added through the API."""
    out: list[tuple[str, bool, str]] = []
    client = Client(root / f"{server.kind}-{db.engine}-client", binary=rport)
    ctx = Context(server, client, http, 0, 0, root / "work")
    new_client: Client | None = None
    try:
        await server.start()
        _, body = await ctx.call("", "GET", "/status", record=False)
        client.server_url, client.fingerprint = server.client_url, body["data"]["fingerprint"]
        expect(body["data"]["clients_auth_source"] == "DB", f"auth source {body['data']}")
        await client.start()
        await wait_connected(ctx)
        out.append(("right password from the table connects", True, ""))
        seen = await refused_client(ctx, f"{CLIENT_AUTH[0]}:wrong", f"{db.engine}-wrong", 8)
        ok = not seen["connected"] and seen["auth_failed_logged"] and seen["client_still_running"]
        out.append(("wrong password refused (client logs it, retries)", ok, str(seen["errors"])))
        status, answer = await ctx.call(
            "",
            "POST",
            "/clients-auth",
            record=False,
            json={"id": "rc-added", "password": "added-pw-1"},
        )
        expect(status == 201, f"POST /clients-auth answered {status}: {answer}")
        rows = await db.run(f"SELECT password FROM {db.q('clients_auth')} WHERE id = 'rc-added'")
        expect(rows == [("added-pw-1",)], f"row in clients_auth: {rows}")
        new_client = Client(
            root / f"{server.kind}-{db.engine}-added",
            binary=rport,
            server_url=server.client_url,
            fingerprint=client.fingerprint,
            extra={"client": {"id": "rc-added-client", "auth": "rc-added:added-pw-1"}},
        )
        await new_client.start()

        async def connected() -> bool:
            status, body = await ctx.call("", "GET", "/clients/rc-added-client", record=False)
            return status == 200 and body["data"]["connection_state"] == "connected"

        await poll("the client with the added credential", connected, 40)
        out.append(("credential added by POST /clients-auth connects a new client", True, ""))
    except (CheckFailed, RuntimeError, KeyError, TimeoutError) as exc:
        out.append(("failed", False, f"{type(exc).__name__}: {exc}"))
    finally:
        if new_client is not None:
            await new_client.stop()
        await client.stop()
        await server.stop()
    return out


async def run_db(rport: str, upstream: str | None, root: Path, engines: list[str]) -> list[Step]:
    dbservers.free_port = free_port  # type: ignore[attr-defined]  # our 42000-42999 range
    steps: list[Step] = []
    async with aiohttp.ClientSession() as http:
        for engine in engines:
            db_server: dbservers.MariaDbServer | dbservers.PostgresServer
            db_server = (
                dbservers.MariaDbServer() if engine == "mysql" else dbservers.PostgresServer()
            )
            await asyncio.to_thread(db_server.start)
            try:
                kinds = ["ours"] + (["upstream"] if upstream and engine == "mysql" else [])
                for kind in kinds:
                    db = await dbservers.fresh_database(engine, db_server, root)
                    await db.create_tables()
                    await db.run(
                        f"INSERT INTO {db.q('clients_auth')} (id, password) VALUES (?, ?)",
                        CLIENT_AUTH,
                    )
                    server = _server_for(db, root, kind, upstream or "")
                    began = time.monotonic()
                    for name, ok, detail in await _steps(db, server, rport, root, http):
                        steps.append(
                            (f"{kind}/{engine}", name, ok, detail, time.monotonic() - began)
                        )
            finally:
                await asyncio.to_thread(db_server.stop)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(db_server.remove)
    return steps
