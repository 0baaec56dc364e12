"""clients.db is written behind: a stop in the middle of a write keeps every record."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rportd.clients.model import Client
from rportd.store.clients import ClientRepository
from rportd.store.database import Database, Transaction


async def test_stop_during_a_write_keeps_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(tmp_path / "clients.db", "clients")
    await db.open()
    repo = ClientRepository(db, flush_interval=0.0)
    writing, release = asyncio.Event(), asyncio.Event()
    transaction = db.transaction

    @contextlib.asynccontextmanager
    async def slow_transaction() -> AsyncIterator[Transaction]:
        async with transaction() as tx:
            writing.set()
            await release.wait()  # a slow disk: the stop arrives in the middle of the write
            yield tx

    monkeypatch.setattr(db, "transaction", slow_transaction)
    repo.start()
    for i in range(200):
        repo.save(Client(id=f"client-{i}", client_auth_id="auth"))
    await asyncio.wait_for(writing.wait(), 5)
    stopping = asyncio.create_task(repo.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # the stop waits for the write instead of abandoning it
    release.set()
    await asyncio.wait_for(stopping, 5)
    await db.close()

    with contextlib.closing(sqlite3.connect(tmp_path / "clients.db")) as con:
        (count,) = con.execute("SELECT COUNT(*) FROM clients").fetchone()
    assert count == 200
