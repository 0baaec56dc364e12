"""Jobs stored in batches: readable at once, stored once committed, never back to running."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from rportd.gotypes import utcnow
from rportd.jobs.model import Job, JobResult
from rportd.jobs.writer import JobWriter
from tests.jobs.test_syncback import open_repo


async def test_batched_writes_keep_the_final_state(tmp_path: Path) -> None:
    repo = await open_repo(tmp_path / "jobs.db")
    writer = JobWriter(repo)
    writer.start()
    try:
        now = utcnow()
        running = [
            Job(
                jid=f"j{i}",
                status="running",
                started_at=now,
                client_id=f"c{i}",
                command="uptime",
                created_by="admin",
                timeout_sec=60,
                pid=i,
            )
            for i in range(50)
        ]
        done = [
            job.copy(
                status="successful",
                finished_at=now + timedelta(seconds=1),
                result=JobResult("up\n", "", ""),
            )
            for job in running
        ]
        stored = [writer.put(job) for job in running]
        assert writer.latest("j7") == running[7]  # readable before any commit
        stored += [writer.put(job) for job in done]
        writer.put(running[3])  # a late copy that still says running changes nothing
        await asyncio.gather(*stored)
        await writer.flush()
        assert writer.latest("j7") == done[7]  # kept in memory once stored
        assert writer.latest("j3") == done[3]
        await repo.upsert(done[7].copy(error="synced from another node"))
        assert writer.latest("j7") is None  # another write: read from jobs.db again
        for job in done:
            found = await repo.get(job.jid)
            assert found is not None
            assert (found.status, found.pid, found.result) == ("successful", job.pid, job.result)
    finally:
        await writer.stop()
        await repo.db.close()
