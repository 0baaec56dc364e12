"""Jobs recorded on one node are stored on another, idempotently by jid (HA sync back)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rportd.gotypes import utcnow
from rportd.jobs.model import ClientTags, Job, JobResult, MultiJob
from rportd.jobs.repository import JobRepository
from rportd.jobs.syncback import JobSyncSource, MultiJobSyncSource
from rportd.store.database import Database


async def open_repo(path: Path) -> JobRepository:
    db = Database(path, "jobs")
    await db.open()
    return JobRepository(db)


async def test_jobs_flow_back_and_never_regress(tmp_path: Path) -> None:
    secondary = await open_repo(tmp_path / "secondary.db")
    primary = await open_repo(tmp_path / "primary.db")
    noted: list[tuple[str, str]] = []
    secondary.write_listeners.append(lambda kind, key: noted.append((kind, key)))
    try:
        now = utcnow()
        multi = MultiJob(
            jid="mj", started_at=now, created_by="admin", client_ids=["c1"],
            tags=ClientTags(["web"], "OR"), command="uptime", timeout_sec=60,
        )  # fmt: skip
        running = Job(
            jid="j1", status="running", started_at=now, client_id="c1", command="uptime",
            created_by="admin", timeout_sec=60, multi_job_id="mj", pid=7,
        )  # fmt: skip
        await secondary.save_multi_job(multi)
        await secondary.create_if_absent(running)
        done = running.copy(
            status="successful",
            finished_at=now + timedelta(seconds=1),
            result=JobResult("up\n", "", ""),
        )
        await secondary.upsert(done)
        assert noted == [("multi_jobs", "mj"), ("jobs", "j1"), ("jobs", "j1")]

        for source_type in (MultiJobSyncSource, JobSyncSource):
            out, into = source_type(secondary), source_type(primary)
            records = await out.load(["mj", "j1", "missing"])
            assert len(records) == 1
            assert await into.store(records) == 1
            await into.store(records)  # a batch sent twice changes nothing

        copy = await primary.get_multi_job("mj")
        assert copy is not None and copy.tags == ClientTags(["web"], "OR")
        assert [j.status for j in copy.jobs] == ["successful"]
        assert copy.jobs[0].result == JobResult("up\n", "", "")

        # a stale "running" copy never overwrites the result
        assert await primary.upsert_rows([running.row()]) == 0
        job = await primary.get("j1")
        assert job is not None and job.status == "successful"
    finally:
        await secondary.db.close()
        await primary.db.close()
