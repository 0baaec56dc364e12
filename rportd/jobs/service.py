"""Running commands and scripts on clients and collecting their results (protocol.md §7).

:class:`JobService` sends ``run_cmd``, keeps track of every job until its
client reports ``cmd_result`` (on any connection of that client), streams live
output to UI WebSockets and orchestrates multi-client jobs. A job whose result
never comes (the client vanished) turns ``unknown`` once ``timeout_sec`` plus a
grace period has passed; one timer queue (:mod:`rportd.timers`) holds those deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncssh

from rportd.api.query import FilterOption, ListOptions
from rportd.gotypes import ci_get, go_dumps, parse_time, utcnow
from rportd.jobs.model import (
    STATUS_FAILED,
    STATUS_RUNNING,
    STATUS_SUCCESSFUL,
    STATUS_UNKNOWN,
    Job,
    MultiJob,
)
from rportd.jobs.repository import JobRepository
from rportd.jobs.requests import MultiJobRequest
from rportd.jobs.streams import JobStream, OutputChannelSession
from rportd.jobs.writer import RECENT_JOBS, JobWriter
from rportd.metrics.instruments import Metrics
from rportd.timers import Scheduler, Timer
from rportd.wire.ssh import ConnectionClosed, RequestFailed

if TYPE_CHECKING:
    from rportd.clients.connection import ClientConnection
    from rportd.clients.model import Client
    from rportd.clients.service import ClientService

log = logging.getLogger(__name__)

NOT_CONNECTED = "client is not connected"
_JID_RE = re.compile(rb'"jid"\s*:\s*"([^"\\]{1,200})"')
_STATUS_RE = re.compile(rb'"status"\s*:\s*"([a-z]{0,20})"')


@dataclass(frozen=True)
class JobSettings:
    """How jobs run (``[server]`` settings and our own limits)."""

    default_timeout_sec: int = 60
    max_results: int = 10000
    max_request_bytes_client: int = 524288
    result_grace: float = 60.0
    cleanup_interval: float = 3600.0
    ack_timeout: float = 60.0
    send_parallelism: int = 100


@dataclass(frozen=True)
class JobSpec:
    """What to run: the same for every target client."""

    command: str
    interpreter: str = ""
    cwd: str = ""
    is_sudo: bool = False
    is_script: bool = False
    timeout_sec: int = 0

    @classmethod
    def of(cls, req: MultiJobRequest, command: str, *, is_script: bool) -> JobSpec:
        """The spec of a multi-client request (REST or WebSocket)."""
        return cls(
            command=command,
            interpreter=req.interpreter,
            cwd=req.cwd,
            is_sudo=req.is_sudo,
            is_script=is_script,
            timeout_sec=req.timeout_sec,
        )


class RunFailed(Exception):
    """``run_cmd`` did not start the job; ``text`` is what the job's ``error`` says."""

    def __init__(self, text: str, *, client_error: bool = False, not_connected: bool = False):
        super().__init__(text)
        self.text = text
        self.client_error = client_error
        self.not_connected = not_connected


@dataclass
class _Pending:
    """A job sent to a client whose result has not arrived yet."""

    job: Job
    waiter: asyncio.Future[Job] | None = None
    timer: Timer | None = None  # its deadline: timeout_sec plus the grace period
    disconnected: bool = False
    restarted: bool = False


# Final statuses counted by name; anything else a client reports counts as "other".
FINAL_STATUSES = frozenset({STATUS_SUCCESSFUL, STATUS_FAILED, STATUS_UNKNOWN})


def new_jid() -> str:
    return str(uuid.uuid4())


class JobService:
    """Commands and scripts on clients: single jobs, multi-client jobs, results."""

    def __init__(
        self,
        repo: JobRepository,
        clients: ClientService,
        settings: JobSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.repo = repo
        self.writer = JobWriter(repo, min(RECENT_JOBS, settings.max_results))
        self.metrics = metrics or Metrics()
        self.clients = clients
        self.settings = settings
        self._pending: dict[str, _Pending] = {}
        self._timers = Scheduler(name="job-deadlines")
        self._streams: dict[str, JobStream] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._executing: dict[str, asyncio.Task[Any]] = {}
        self._loops: list[asyncio.Task[None]] = []
        # Called with every result a client reports, once it is stored (audit log).
        self.result_listeners: list[Callable[[Job], Awaitable[None]]] = []
        clients.request_handlers["cmd_result"] = self._on_cmd_result
        clients.oversized_request_handlers["cmd_result"] = self._on_oversized_result
        clients.channel_handlers["stdout"] = self._stdout_channel
        clients.channel_handlers["stderr"] = self._stderr_channel
        clients.disconnect_listeners.append(self._on_disconnect)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Resume watching jobs left running in ``jobs.db``; start the background tasks."""
        now = utcnow()
        for job in await self.repo.running():
            left = 0.0
            if job.started_at is not None:
                left = max(0.0, job.timeout_sec - (now - job.started_at).total_seconds())
            pending = _Pending(job, restarted=True)
            self._pending[job.jid] = pending
            self._set_deadline(pending, left + self.settings.result_grace)
        self._timers.start()
        self.writer.start()
        self._loops.append(asyncio.create_task(self._cleanup_loop(), name="jobs-cleanup"))

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._loops.clear()
        self._tasks.clear()
        await self.writer.stop()
        await self._timers.stop()
        for pending in self._pending.values():
            if pending.waiter is not None and not pending.waiter.done():
                pending.waiter.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- UI streams ---------------------------------------------------------------------

    def stream_for(self, key: str) -> JobStream | None:
        """The UI stream of a multi-job (or single job) id, if one is attached."""
        return self._streams.get(key)

    def detach_stream(self, key: str) -> None:
        self._streams.pop(key, None)

    # --- single-client jobs -----------------------------------------------------------------

    def _timeout(self, spec: JobSpec) -> int:
        """``timeout_sec`` must be positive: 0 or less means ``run_remote_cmd_timeout_sec``."""
        return spec.timeout_sec if spec.timeout_sec > 0 else self.settings.default_timeout_sec

    def _new_job(self, client: Client, spec: JobSpec, created_by: str) -> Job:
        return Job(
            jid=new_jid(),
            client_id=client.id,
            client_name=client.name,
            command=spec.command,
            cwd=spec.cwd,
            interpreter=spec.interpreter,
            created_by=created_by,
            timeout_sec=self._timeout(spec),
            is_sudo=spec.is_sudo,
            is_script=spec.is_script,
        )

    async def run(self, client: Client, spec: JobSpec, created_by: str) -> Job:
        """Start a job on one connected client (REST); it is stored as ``running``.

        Raises :class:`RunFailed` when the client cannot be reached or refuses;
        nothing is stored then (as upstream). The answer waits until the job is
        committed (with whatever other jobs were queued meanwhile), so an
        acknowledged job survives a crash.
        """
        job = self._new_job(client, spec, created_by)
        running, _ = await self._send(client, job, wait=False)
        await self.writer.put(running)
        return running

    async def _send(
        self, client: Client, job: Job, *, wait: bool
    ) -> tuple[Job, asyncio.Future[Job] | None]:
        """Deliver ``job`` with ``run_cmd``: the running job and, if asked, its result future."""
        conn = client.connection
        if conn is None:
            raise RunFailed(NOT_CONNECTED, not_connected=True)
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop.create_future() if wait else None)
        self._pending[job.jid] = pending
        timeout = self.settings.ack_timeout
        self._set_deadline(pending, timeout + job.timeout_sec + self.settings.result_grace)
        try:
            reply = await conn.call("run_cmd", job.to_json(), timeout)
            pid, started_at = _decode_run_cmd_response(reply)
        except RequestFailed as exc:
            self._forget(job.jid)
            raise RunFailed(f"client error: {exc.text}", client_error=True) from None
        except TimeoutError:
            self._forget(job.jid)
            raise RunFailed(
                f"failed to send request: the client did not answer run_cmd within {timeout:g}s"
            ) from None
        except (ConnectionClosed, asyncssh.Error, OSError) as exc:
            self._forget(job.jid)
            raise RunFailed(f"failed to send request: {exc or 'connection closed'}") from None
        except ValueError as exc:
            self._forget(job.jid)
            raise RunFailed(f"invalid client response format: {exc}", client_error=True) from None
        running = job.copy(pid=pid, started_at=started_at, status=STATUS_RUNNING)
        self.metrics.jobs_started.inc()
        if self._pending.get(job.jid) is pending:
            pending.job = running
            self._set_deadline(pending, job.timeout_sec + self.settings.result_grace)
        return running, pending.waiter

    def _take(self, jid: str) -> _Pending | None:
        """Stop waiting for the result of ``jid``; its pending entry, if there was one."""
        pending = self._pending.pop(jid, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        return pending

    def _forget(self, jid: str) -> None:
        pending = self._take(jid)
        if pending is not None and pending.waiter is not None and not pending.waiter.done():
            pending.waiter.cancel()

    # --- multi-client jobs --------------------------------------------------------------

    async def start_multi(
        self,
        request: MultiJobRequest,
        spec: JobSpec,
        targets: list[Client],
        created_by: str,
        stream: JobStream | None = None,
        *,
        schedule_id: str | None = None,
    ) -> MultiJob:
        """Store a multi-client job and run it in the background (one child job per client).

        ``schedule_id`` marks a run started by a schedule.
        """
        multi = MultiJob(
            jid=new_jid(),
            started_at=utcnow(),
            created_by=created_by,
            schedule_id=schedule_id,
            client_ids=request.client_ids,
            group_ids=request.group_ids,
            tags=request.tags,
            command=spec.command,
            cwd=spec.cwd,
            interpreter=spec.interpreter,
            timeout_sec=self._timeout(spec),
            concurrent=request.execute_concurrently,
            abort_on_err=request.abort_on_err,
            is_sudo=spec.is_sudo,
            is_script=spec.is_script,
        )
        await self.repo.save_multi_job(multi)
        if stream is not None:
            stream.expect(len(targets))
            self._streams[multi.jid] = stream
        task = self._spawn(self._execute(multi, list(targets), stream), f"multi-job-{multi.jid}")
        self._executing[multi.jid] = task
        task.add_done_callback(lambda _: self._executing.pop(multi.jid, None))
        return multi

    def executing(self, multi_job_id: str) -> bool:
        """Whether this node is still starting (sequential: running) the multi-job's jobs."""
        return multi_job_id in self._executing

    async def _execute(
        self, multi: MultiJob, targets: list[Client], stream: JobStream | None
    ) -> None:
        try:
            if multi.concurrent:
                gate = asyncio.Semaphore(self.settings.send_parallelism)

                async def one(client: Client) -> None:
                    async with gate:
                        with contextlib.suppress(RunFailed):
                            await self._run_child(multi, client, stream, wait=False)

                await asyncio.gather(*(one(c) for c in targets))
                return
            for client in targets:
                try:
                    running, waiter = await self._run_child(multi, client, stream, wait=True)
                except RunFailed as exc:
                    if multi.abort_on_err and not exc.not_connected:
                        log.info("multi-job %s aborted after: %s", multi.jid, exc.text)
                        break
                    continue
                assert waiter is not None
                result = await waiter
                if multi.abort_on_err and result.status == STATUS_FAILED:
                    log.info("multi-job %s aborted: job %s failed", multi.jid, running.jid)
                    break
            else:
                return
            if stream is not None:
                stream.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("multi-job %s failed", multi.jid)

    async def _run_child(
        self, multi: MultiJob, client: Client, stream: JobStream | None, *, wait: bool
    ) -> tuple[Job, asyncio.Future[Job] | None]:
        job = Job(
            jid=new_jid(),
            started_at=utcnow(),
            client_id=client.id,
            client_name=client.name,
            command=multi.command,
            cwd=multi.cwd,
            is_sudo=multi.is_sudo,
            is_script=multi.is_script,
            interpreter=multi.interpreter,
            created_by=multi.created_by,
            timeout_sec=multi.timeout_sec,
            multi_job_id=multi.jid,
            stream_result=stream is not None,
        )
        try:
            running, waiter = await self._send(client, job, wait=wait)
        except RunFailed as exc:
            log.info(
                "job %s on client %s not started: %s",
                job.jid,
                client.id,
                exc.text,
                extra={"job_id": job.jid, "client_id": client.id},
            )
            failed = job.copy(status=STATUS_FAILED, finished_at=utcnow(), error=exc.text)
            if stream is not None:
                stream.final(go_dumps(failed.to_json()) + "\n")
            await self._store_started(failed)
            raise
        await self._store_started(running)
        return running, waiter

    async def _store_started(self, job: Job) -> None:
        await self.writer.put(job)

    # --- results from clients -------------------------------------------------------------

    def _on_cmd_result(self, conn: ClientConnection, payload: bytes) -> None:
        client = conn.client
        try:
            obj = json.loads(payload)
        except ValueError as exc:
            log.warning("undecodable cmd_result from client %s: %s", getattr(client, "id", ""), exc)
            return
        if not isinstance(obj, dict) or client is None:
            return
        job = Job.from_json(obj)
        if not job.jid:
            return
        if job.client_id and job.client_id != client.id:
            log.warning(
                "client %s reported a result for job %s of client %s; ignored",
                client.id,
                job.jid,
                job.client_id,
            )
            return
        pending = self._pending.get(job.jid)
        if pending is not None:
            job.client_name = job.client_name or pending.job.client_name
            job.multi_job_id = job.multi_job_id or pending.job.multi_job_id
        job.client_id = client.id
        self._complete(job, payload.decode("utf-8", "replace"), reported=True)

    def _complete(self, job: Job, ui_text: str, *, reported: bool = False) -> None:
        """A final job: to its UI stream now, then stored, then its waiter woken."""
        self._count_finished(job)
        stream = self._streams.get(job.multi_job_id or job.jid)
        if stream is not None:
            stream.final(ui_text)
        pending = self._take(job.jid)
        self._spawn(self._finish(job, pending, reported), f"job-result-{job.jid}")

    def _count_finished(self, job: Job) -> None:
        status = job.status if job.status in FINAL_STATUSES else "other"
        self.metrics.jobs_finished.labels(status).inc()
        log.info(
            "job %s on client %s ended %s",
            job.jid,
            job.client_id,
            job.status,
            extra={"job_id": job.jid, "client_id": job.client_id, "status": job.status},
        )
        if job.started_at is not None and job.finished_at is not None:
            seconds = (job.finished_at - job.started_at).total_seconds()
            if seconds >= 0:
                self.metrics.job_seconds.observe(seconds)

    async def _finish(self, job: Job, pending: _Pending | None, reported: bool) -> None:
        await self.writer.put(job)
        if pending is not None and pending.waiter is not None and not pending.waiter.done():
            pending.waiter.set_result(job)
        for listener in self.result_listeners if reported else ():
            try:
                await listener(job)
            except Exception:
                log.exception("a listener failed on the result of job %s", job.jid)

    def _on_oversized_result(self, conn: ClientConnection, payload: bytes) -> None:
        """A result over ``max_request_bytes_client``: dropped, and the job says so."""
        client = conn.client
        head = payload[:4096]
        found = _JID_RE.search(head)
        if client is None or found is None:
            return
        status = _STATUS_RE.search(head)
        reported = status.group(1).decode() if status else ""
        error = (
            f"the client's result of {len(payload)} bytes exceeds max_request_bytes_client "
            f"({self.settings.max_request_bytes_client} bytes) and was dropped"
            + (f" (the client reported status {reported!r})" if reported else "")
            + "; raise [server] max_request_bytes_client or let the command print less"
        )
        jid = found.group(1).decode("utf-8", "replace")
        self._spawn(self._fail_oversized(client.id, jid, error), f"job-oversized-{jid}")

    async def _fail_oversized(self, client_id: str, jid: str, error: str) -> None:
        pending = self._pending.get(jid)
        base = pending.job if pending is not None else await self.job(jid)
        if base is None or base.client_id != client_id:
            log.warning("dropped an oversized result of unknown job %s (client %s)", jid, client_id)
            return
        log.warning("job %s: %s", jid, error, extra={"job_id": jid, "client_id": client_id})
        failed = base.copy(status=STATUS_FAILED, finished_at=utcnow(), error=error)
        self._complete(failed, go_dumps(failed.to_json()) + "\n")

    # --- live output channels ---------------------------------------------------------------

    def _output_channel(
        self, kind: str, conn: ClientConnection, payload: bytes
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        try:
            job = json.loads(payload)
        except ValueError:
            job = None
        if not isinstance(job, dict):
            job = {}
        key = job.get("multi_job_id") or job.get("jid") or ""
        session = OutputChannelSession(kind, job, str(key), self._streams.get)
        return conn.ssh.new_channel(), session

    def _stdout_channel(
        self, conn: ClientConnection, payload: bytes
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        return self._output_channel("stdout", conn, payload)

    def _stderr_channel(
        self, conn: ClientConnection, payload: bytes
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        return self._output_channel("stderr", conn, payload)

    # --- results that never come --------------------------------------------------------------

    def _on_disconnect(self, client: Client) -> None:
        for pending in self._pending.values():
            if pending.job.client_id == client.id:
                pending.disconnected = True

    def _set_deadline(self, pending: _Pending, seconds: float) -> None:
        """Give up on the result of ``pending`` ``seconds`` from now (replacing any deadline)."""
        if pending.timer is not None:
            pending.timer.cancel()
        pending.timer = self._timers.call_later(seconds, lambda: self._deadline_passed(pending))

    def _deadline_passed(self, pending: _Pending) -> None:
        if self._pending.get(pending.job.jid) is pending:
            self._expire(pending)

    def _expire(self, pending: _Pending) -> None:
        job = pending.job
        grace = self.settings.result_grace
        if pending.restarted:
            why = "the server restarted while the job was running"
        elif pending.disconnected:
            why = "the client disconnected while the job was running"
        else:
            why = "the client did not report it"
        error = f"no result received within timeout_sec ({job.timeout_sec}s) + {grace:g}s: {why}"
        log.info(
            "job %s on client %s: %s",
            job.jid,
            job.client_id,
            error,
            extra={"job_id": job.jid, "client_id": job.client_id},
        )
        unknown = job.copy(status=STATUS_UNKNOWN, finished_at=utcnow(), error=error)
        self._complete(unknown, go_dumps(unknown.to_json()) + "\n")

    # --- retention ---------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                removed = await self.repo.cleanup(self.settings.max_results)
                self.writer.forget_recent()
            except Exception:
                log.exception("jobs cleanup failed")
            else:
                if removed:
                    log.info("removed %d old jobs (jobs_max_results)", removed)

    # --- reads ------------------------------------------------------------------------

    async def job(self, jid: str) -> Job | None:
        """Job ``jid`` as stored, or as it will be stored once its batch is committed."""
        known = self.writer.latest(jid)
        if known is not None and known.multi_job_id is None:
            return Job.from_row(known.row())  # as read back: times in UTC
        await self.writer.flush()  # a multi-job's child: its schedule_id is in the join
        return await self.repo.get(jid)

    async def multi_job(self, jid: str) -> MultiJob | None:
        """A multi-client job with its newest child jobs, queued writes included."""
        await self.writer.flush()
        return await self.repo.get_multi_job(jid)

    async def list_jobs(
        self,
        options: ListOptions,
        scope: FilterOption,
        fields: list[str] | None,
        result_fields: list[str] | None,
    ) -> tuple[list[Job], int]:
        """A page of jobs within ``scope`` (one client or one multi-job) and the total."""
        options.filters = [*options.filters, scope]
        await self.writer.flush()
        jobs = await self.repo.page(options, fields, result_fields)
        return jobs, await self.repo.count(options.filters)


def _decode_run_cmd_response(reply: bytes) -> tuple[int | None, datetime | None]:
    """``{"Pid": 4242, "StartedAt": "..."}`` (Go field names, matched case-insensitively)."""
    try:
        obj = json.loads(reply)
    except ValueError as exc:
        raise ValueError(f"failed to decode response into *comm.RunCmdResponse: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("failed to decode response into *comm.RunCmdResponse")
    pid = ci_get(obj, "Pid")
    started = ci_get(obj, "StartedAt")
    try:
        started_at = parse_time(started) if isinstance(started, str) else None
    except ValueError as exc:
        raise ValueError(f"failed to decode response into *comm.RunCmdResponse: {exc}") from None
    if started_at is not None and started_at.year <= 1:
        started_at = None
    return (pid if isinstance(pid, int) and not isinstance(pid, bool) else None), started_at
