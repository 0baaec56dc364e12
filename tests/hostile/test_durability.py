"""Acknowledged writes outlive a power loss, not only a crash (issue item 9).

A power cut cannot be staged here; what it needs can be observed: the file's data
and then its folder (which holds the rename) reach the disk before the write returns,
and SQLite syncs every commit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
        async with db.engine.connect() as conn:
            level = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
        assert level == 2  # FULL: the WAL is synced at every commit
    finally:
        await db.close()
