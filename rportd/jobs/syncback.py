"""Jobs a secondary ran while serving clients, sent back to the primary (HA sync back)."""

from __future__ import annotations

from typing import Any

from rportd.jobs.repository import KIND_JOBS, KIND_MULTI_JOBS, JobRepository


class JobSyncSource:
    """``jobs`` rows by jid; stored on the primary with :meth:`JobRepository.upsert_rows`."""

    kind = KIND_JOBS

    def __init__(self, repo: JobRepository) -> None:
        self.repo = repo

    async def load(self, keys: list[str]) -> list[dict[str, Any]]:
        return await self.repo.job_rows(keys)

    async def store(self, records: list[dict[str, Any]]) -> int:
        return await self.repo.upsert_rows(records)


class MultiJobSyncSource:
    """``multi_jobs`` rows by jid."""

    kind = KIND_MULTI_JOBS

    def __init__(self, repo: JobRepository) -> None:
        self.repo = repo

    async def load(self, keys: list[str]) -> list[dict[str, Any]]:
        return await self.repo.multi_job_rows(keys)

    async def store(self, records: list[dict[str, Any]]) -> int:
        return await self.repo.save_multi_job_rows(records)
