"""File-held data sets that change behind the change log's back.

Client credentials and API users may live in JSON files that operators edit
by hand (and that ``rportd user`` writes while the server is down); a crash
between a file write and its log entry loses the entry too. The change log
keeps, in ``ha.db`` and in the same transaction as each entry, a mirror of
what it says such data sets contain. :class:`FileMirror` compares the files
with it: on the primary every difference is logged as a change (so that
secondaries get it); on a secondary, whose data only comes from its primary,
the replicated content is put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from rportd.ha.changelog import ChangeLog
from rportd.store.changes import ReplicatedDataset
from rportd.tasks import BackgroundTask

log = logging.getLogger(__name__)

INTERVAL = 3.0


class FileMirror:
    """Finds and settles edits of file-held data sets made outside rportd."""

    def __init__(self, changelog: ChangeLog, datasets: Mapping[str, ReplicatedDataset]) -> None:
        self.changelog = changelog
        self.datasets = {
            name: ds for name, ds in datasets.items() if getattr(ds, "file_backed", False)
        }
        changelog.mirrored |= set(self.datasets)
        self._task = BackgroundTask(self._run, "ha-file-mirror")

    async def seed(self) -> None:
        """On a node's first HA start, take the files as the log's view of them."""
        for name, ds in self.datasets.items():
            if not await self.changelog.mirror_of(name) and self.changelog.position == 0:
                await self.changelog.set_mirror(name, await ds.snapshot())

    def start(self) -> None:
        if self.datasets:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def reconcile(self) -> int:
        """Act on differences between the files and the log; return how many entries."""
        found = 0
        for name, ds in self.datasets.items():
            lock = getattr(ds, "write_lock", None)
            async with lock if lock is not None else contextlib.nullcontext():
                current = await ds.snapshot()
                known = await self.changelog.mirror_of(name)
                changed = {k: v for k, v in current.items() if known.get(k) != v}
                removed = [k for k in known if k not in current]
                if not changed and not removed:
                    continue
                found += len(changed) + len(removed)
                if self.changelog.writable:
                    log.info(
                        "HA: %s changed outside rportd (%d entries); replicating it",
                        name,
                        len(changed) + len(removed),
                    )
                    for key, doc in changed.items():
                        await self.changelog.record(None, name, key, doc)
                    for key in removed:
                        await self.changelog.record(None, name, key, None)
                    continue
            log.warning(
                "HA: %s was changed on this secondary (%d entries); it only takes data from "
                "its primary, so the replicated content is put back",
                name,
                len(changed) + len(removed),
            )
            await ds.restore(known)
        return found

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                await self.reconcile()
            except Exception:
                log.exception("HA: checking file-held data failed")
