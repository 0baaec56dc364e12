"""Running schedules: one task sleeps until the next due schedule and starts its run.

A run is a multi-client job (``schedule_id`` set, created by the schedule's
creator) started through the jobs engine, with the targets resolved at run
time. Runs only start while this node is the leader, checked at every due time.
A schedule without ``overlaps`` skips a run while its previous run is still
going: its jobs are still being started here, or a job of it has neither
finished nor outlived its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from rportd.gotypes import utcnow
from rportd.jobs.requests import JobRequestError, decode_script
from rportd.jobs.service import JobService, JobSpec
from rportd.jobs.targeting import ClientGroupProvider, ClientLookup, resolve_targets
from rportd.schedules import cron
from rportd.schedules.model import Schedule
from rportd.schedules.store import ScheduleStore
from rportd.tasks import BackgroundTask

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Never sleep longer than this, so a changed wall clock is noticed.
MAX_SLEEP = 60.0
# After an unexpected error, wait this long before trying again.
RETRY_DELAY = 1.0


@dataclass
class _Entry:
    """A schedule's parsed expression and next due time."""

    spec: str
    timing: cron.Schedule
    due: datetime | None = None
    token: int = 0


class ScheduleRunner:
    """Starts every schedule's runs at its times; a :class:`ScheduleWatcher` of the store."""

    def __init__(
        self,
        store: ScheduleStore,
        jobs: JobService,
        clients: ClientLookup,
        groups: ClientGroupProvider,
        is_leader: Callable[[], bool],
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.clients = clients
        self.groups = groups
        self.is_leader = is_leader
        self.clock = clock
        self.local: tzinfo = UTC
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._tokens = itertools.count(1)
        self._changes: dict[str, str | None] = {}
        self._reload = True
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._loop, "schedule-runner")
        self._last_run: dict[str, str] = {}  # schedule id -> multi-job id started here
        store.watchers.append(self)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Plan every stored schedule, then start the task."""
        self.local = await asyncio.to_thread(cron.local_zone)
        await self._refresh()
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    # --- ScheduleWatcher --------------------------------------------------------------------

    def schedule_changed(self, schedule_id: str, spec: str | None) -> None:
        self._changes[schedule_id] = spec
        self._wake.set()

    def schedules_replaced(self) -> None:
        self._reload = True
        self._wake.set()

    def next_run(self, schedule_id: str) -> datetime | None:
        """When the schedule is due next (as this node has planned it)."""
        entry = self._entries.get(schedule_id)
        return entry.due if entry is not None else None

    # --- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            delay: float | None
            try:
                await self._refresh()
                await self._run_due()
                delay = self._delay()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("schedules: unexpected error; trying again")
                delay = RETRY_DELAY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _refresh(self) -> None:
        """Take in the schedules that changed since the last tick."""
        if self._reload:
            specs = await self.store.specs()
            self._reload = False
            self._changes.clear()
            self._entries.clear()
            self._heap.clear()
            for schedule_id, spec in specs:
                await self._plan(schedule_id, spec)
        while self._changes:
            schedule_id, changed = self._changes.popitem()
            if changed is None:
                self._entries.pop(schedule_id, None)
                self._last_run.pop(schedule_id, None)
            else:
                await self._plan(schedule_id, changed)

    async def _plan(self, schedule_id: str, spec: str) -> None:
        """(Re)start a schedule's timing from now."""
        try:
            timing = await asyncio.to_thread(cron.parse, spec)
        except cron.CronError as exc:
            self._entries.pop(schedule_id, None)
            log.warning("schedule %s never runs: invalid schedule %r: %s", schedule_id, spec, exc)
            return
        entry = _Entry(spec, timing)
        self._entries[schedule_id] = entry
        self._set_due(schedule_id, entry, self.clock())

    def _set_due(self, schedule_id: str, entry: _Entry, now: datetime) -> None:
        entry.due = entry.timing.next(now, self.local)
        entry.token = next(self._tokens)
        if entry.due is not None:
            heapq.heappush(self._heap, (entry.due, entry.token, schedule_id))

    def _pop_stale(self) -> None:
        while self._heap:
            _, token, schedule_id = self._heap[0]
            entry = self._entries.get(schedule_id)
            if entry is not None and entry.token == token:
                return
            heapq.heappop(self._heap)

    def _delay(self) -> float | None:
        self._pop_stale()
        if not self._heap:
            return None
        wait = (self._heap[0][0] - self.clock()).total_seconds()
        return min(max(wait, 0.0), MAX_SLEEP)

    async def _run_due(self) -> None:
        now = self.clock()
        self._pop_stale()
        while self._heap and self._heap[0][0] <= now:
            _, _, schedule_id = heapq.heappop(self._heap)
            entry = self._entries[schedule_id]
            self._set_due(schedule_id, entry, now)
            if not self.is_leader():
                log.debug("schedule %s due; not run: this node is not the leader", schedule_id)
            else:
                try:
                    await self._run(schedule_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("schedule %s: the run failed to start", schedule_id)
            self._pop_stale()

    # --- one run ------------------------------------------------------------------------------

    async def _run(self, schedule_id: str) -> None:
        schedule = await self.store.get(schedule_id, last_execution=False)
        if schedule is None:
            return
        if not schedule.overlaps and await self._in_progress(schedule):
            log.info(
                "schedule %s (%s): skipped, its previous run is still in progress",
                schedule.id,
                schedule.name,
            )
            return
        job = schedule.job
        try:
            targets = resolve_targets(job, self.clients, self.groups)
            command = decode_script(job.script) if schedule.is_script else job.command
        except JobRequestError as exc:
            log.warning("schedule %s (%s): not run: %s", schedule.id, schedule.name, exc.text)
            return
        spec = JobSpec.of(job, command, is_script=schedule.is_script)
        multi = await self.jobs.start_multi(
            job, spec, targets, schedule.created_by, schedule_id=schedule.id
        )
        self._last_run[schedule.id] = multi.jid
        log.info(
            "schedule %s (%s): started multi-job %s on %d client(s)",
            schedule.id,
            schedule.name,
            multi.jid,
            len(targets),
        )

    async def _in_progress(self, schedule: Schedule) -> bool:
        last = self._last_run.get(schedule.id)
        if last is not None and self.jobs.executing(last):
            return True
        timeout = schedule.job.timeout_sec
        if timeout <= 0:
            timeout = self.jobs.settings.default_timeout_sec
        since = self.clock() - timedelta(seconds=timeout)
        return await self.store.unfinished_jobs(schedule.id, since) > 0
