"""Acknowledged writes outlive a power loss, not only a crash (issue item 9).

A power cut cannot be staged here; what it needs can be observed: the file's data
and then its folder (which holds the rename) reach the disk before the write returns,
and SQLite syncs every commit.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from rportd.store.database import Database
from rportd.store.files import atomic_write_text


def test_json_files_sync_their_folder_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "api-users.json"
    atomic_write_text(target, "[]")
    assert target.read_text() == "[]"
    assert synced == ["file", "folder"]


async def test_sqlite_commits_are_synced(tmp_path: Path) -> None:
    db = Database(tmp_path / "clients.db", "clients", wal=True)
    await db.open()
    try:
        async with db.transaction() as tx:  # the connection that writes
            writer = await tx.fetch_one("PRAGMA synchronous")
        reader = await db.fetch_one("PRAGMA synchronous")
        # FULL: the WAL is synced at every commit
        assert writer == {"synchronous": 2} and reader == {"synchronous": 2}
    finally:
        await db.close()


async def test_a_cancelled_write_leaves_nothing_and_the_next_one_commits(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db", None, wal=True)
    await db.open()
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        entered = asyncio.Event()

        async def interrupted() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (k) VALUES (:k)", {"k": "lost"})
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(interrupted())
        await entered.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.execute("INSERT INTO t (k) VALUES (:k)", {"k": "kept"})
        assert await db.fetch_all("SELECT k FROM t") == [{"k": "kept"}]
        # A duplicate is the same IntegrityError callers saw through SQLAlchemy's engine.
        with pytest.raises(IntegrityError):
            await db.execute("INSERT INTO t (k) VALUES (:k)", {"k": "kept"})
        assert await db.fetch_all("SELECT k FROM t") == [{"k": "kept"}]
    finally:
        await db.close()
