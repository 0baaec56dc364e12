"""``run_cmd`` / ``cmd_result`` execution model of the client (protocol.md §7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from asyncssh.misc import ChannelOpenError

from .gojson import GoDecodeError, GoStruct, go_dumps, go_time_now, go_unmarshal
from .ssh import RawChannelSession, RportSSHConnection, go_open_error_text

__all__ = [
    "JOB_SCHEMA",
    "CapacityBuffer",
    "CommandError",
    "CommandRunner",
    "SummaryBuffer",
    "build_argv",
    "command_allowed",
]

log = logging.getLogger(__name__)

JOB_RESULT_SCHEMA = GoStruct(
    "models.JobResult", (("stdout", "string"), ("stderr", "string"), ("summary", "string"))
)
JOB_SCHEMA = GoStruct(
    "models.Job",
    (
        ("jid", "string"),
        ("status", "string"),
        ("finished_at", ("ptr", "time")),
        ("client_id", "string"),
        ("client_name", "string"),
        ("command", "string"),
        ("cwd", "string"),
        ("interpreter", "string"),
        ("pid", ("ptr", "int")),
        ("started_at", "time"),
        ("created_by", "string"),
        ("timeout_sec", "int"),
        ("multi_job_id", ("ptr", "string")),
        ("schedule_id", ("ptr", "string")),
        ("error", "string"),
        ("result", ("ptr", JOB_RESULT_SCHEMA)),
        ("is_sudo", "bool"),
        ("is_script", "bool"),
        ("stream_result", "bool"),
    ),
)

UNIX_SHELL = "/bin/sh"
TACOSCRIPT = "tacoscript"
SCRIPT_FILE_MODE = 0o540
SCRIPT_DIR_MODE = 0o700
SCANNER_MAX_TOKEN = 64 * 1024

_SIGNAL_NAMES = {
    signal.SIGHUP: "hangup",
    signal.SIGINT: "interrupt",
    signal.SIGQUIT: "quit",
    signal.SIGILL: "illegal instruction",
    signal.SIGABRT: "aborted",
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGPIPE: "broken pipe",
    signal.SIGALRM: "alarm clock",
    signal.SIGTERM: "terminated",
    signal.SIGUSR1: "user defined signal 1",
    signal.SIGUSR2: "user defined signal 2",
}


class CommandError(Exception):
    """A run_cmd failure; ``str(exc)`` is the exact failure text sent to the server."""


def command_allowed(cmd: str, allow: list[str], deny: list[str], order: list[str]) -> bool:
    """The allow/deny rule of §7.2 (unanchored regex search)."""
    allow_match = any(re.search(p, cmd) for p in allow)
    deny_match = any(re.search(p, cmd) for p in deny)
    if list(order) == ["allow", "deny"]:
        return allow_match and not deny_match
    if list(order) == ["deny", "allow"]:
        return allow_match or not deny_match
    return False


def build_argv(
    script_path: str,
    *,
    interpreter: str,
    aliases: dict[str, str],
    is_sudo: bool,
    has_shebang: bool,
) -> list[str]:
    """Unix argv of §7.3: [sudo -n] [interpreter unless #!] path (spaces escaped)."""
    argv: list[str] = []
    if is_sudo:
        argv += ["sudo", "-n"]
    interp = ""
    if not has_shebang:
        if aliases and interpreter and interpreter in aliases:
            interp = aliases[interpreter]
        elif interpreter == "":
            interp = UNIX_SHELL
        else:
            interp = interpreter
    if interp:
        argv.append(interp)
    cmd = script_path
    if " " in cmd and interp != TACOSCRIPT:
        cmd = cmd.replace(" ", "\\ ")
    argv.append(cmd)
    return argv


class CapacityBuffer:
    """Keeps at most ``capacity`` bytes and remembers whether it overflowed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = bytearray()
        self.overflow = False

    def write(self, p: bytes) -> None:
        free = self.capacity - len(self.data)
        if len(p) > free:
            self.data += p[: max(free, 0)]
            self.overflow = True
        else:
            self.data += p

    def overflow_message(self) -> str:
        return f"maximum send_back_limit of {self.capacity} bytes exceeded"


class SummaryBuffer:
    """Extracts the text between ``<summary>`` and ``</summary>`` (line based, like Go)."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._inside = False
        self._out = bytearray()
        self._broken = False

    def write(self, data: bytes) -> None:
        if self._broken:
            return
        self._partial += data
        while True:
            idx = self._partial.find(b"\n")
            if idx < 0:
                break
            line = bytes(self._partial[:idx])
            del self._partial[: idx + 1]
            self._line(line)
        if len(self._partial) >= SCANNER_MAX_TOKEN:  # bufio.Scanner: token too long
            self._broken = True

    @property
    def broken(self) -> bool:
        """The scanner gave up (a line of 64 KiB or more); Go stops reading its pipe."""
        return self._broken

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        while line:
            low = line.lower()
            if self._inside:
                idx = low.find(b"</summary>")
                if idx != -1:
                    self._out += line[:idx]
                    line = line[idx + len(b"</summary>") :]
                    self._inside = False
                else:
                    self._out += line
                    break
            else:
                idx = low.find(b"<summary>")
                if idx != -1:
                    line = line[idx + len(b"<summary>") :]
                    self._inside = True
                else:
                    break
        if self._inside:
            self._out += b"\n"

    def finish(self) -> bytes:
        if not self._broken and self._partial:
            self._line(bytes(self._partial))
            self._partial.clear()
        return bytes(self._out)


def _exit_error(returncode: int) -> str:
    if returncode == 0:
        return ""
    if returncode > 0:
        return f"exit status {returncode}"
    sig = -returncode
    try:
        name = _SIGNAL_NAMES.get(signal.Signals(sig), f"signal {sig}")
    except ValueError:
        name = f"signal {sig}"
    return f"signal: {name}"


def _go_text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


@dataclass
class RunningJob:
    """Book-keeping of one observed command."""

    jid: str
    proc: asyncio.subprocess.Process
    script: str
    channels: list[Any] = field(default_factory=list)


class CommandRunner:
    """Validates and executes ``run_cmd`` jobs; reports ``cmd_result``."""

    def __init__(
        self,
        *,
        cfg: Any,
        data_dir: str,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        current_conn: Callable[[], RportSSHConnection | None],
        event: Callable[[str], None],
        on_result: Callable[[dict[str, Any]], None],
    ) -> None:
        self.cfg = cfg
        self.data_dir = data_dir
        self.scripts_dir = os.path.join(data_dir, "scripts")
        self._spawn = spawn
        self._current_conn = current_conn
        self._event = event
        self._on_result = on_result
        self.running: dict[str, RunningJob] = {}
        self.leftover_processes: list[asyncio.subprocess.Process] = []

    def ensure_scripts_dir(self) -> None:
        """Create ``<data_dir>/scripts`` with mode 0700 (done by the client installer)."""
        os.makedirs(self.scripts_dir, mode=SCRIPT_DIR_MODE, exist_ok=True)
        os.chmod(self.scripts_dir, SCRIPT_DIR_MODE)

    def _validate_scripts_dir(self) -> None:
        d = self.scripts_dir
        if not d.strip():
            raise CommandError("script directory cannot be empty")
        try:
            st = os.stat(d)
        except FileNotFoundError:
            raise CommandError(f"script directory {d} does not exist") from None
        except OSError as exc:
            raise CommandError(str(exc)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise CommandError(f"script directory {d} is not a valid directory")
        if not os.access(d, os.W_OK):
            raise CommandError(f"scripts directory {d} is not writable")
        mode = stat.S_IMODE(st.st_mode)
        uid = os.getuid()
        user = os.environ.get("USER", str(uid))
        if mode != SCRIPT_DIR_MODE:
            raise CommandError(
                f"scripts directory {d} must be read-writable only by {user}[{uid}]. "
                f"Change directory mode from 0{mode:o} to 0{SCRIPT_DIR_MODE:o}. "
                "Your setup is insecure"
            )
        if st.st_uid != uid:
            raise CommandError(
                f"script directory {d} must be owned by {user}[{uid}] but it's owned by "
                f"{st.st_uid}. Your setup is insecure"
            )

    async def handle_run_cmd(self, conn: RportSSHConnection, payload: bytes) -> bytes:
        """Validate and start a job; returns the success reply payload (RunCmdResponse)."""
        cfg = self.cfg
        if not cfg.remote_commands_enabled:
            raise CommandError("remote commands execution is disabled")
        try:
            job: dict[str, Any] = go_unmarshal(payload, JOB_SCHEMA)
        except GoDecodeError as exc:
            raise CommandError(f"failed to decode requested job: {exc}") from None
        if job["is_script"] and not cfg.remote_scripts_enabled:
            raise CommandError("remote scripts are disabled")
        command: str = job["command"]
        if not job["is_script"] and not command_allowed(
            command, cfg.commands_allow, cfg.commands_deny, cfg.commands_order
        ):
            raise CommandError(f"command is not allowed: {command}")

        self._validate_scripts_dir()
        ext = ".yml" if job["interpreter"] == TACOSCRIPT else ""
        script = os.path.join(self.scripts_dir, f"{uuid.uuid4()}{ext}")
        try:
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SCRIPT_FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(command.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            raise CommandError(f"open {script}: {os.strerror(exc.errno or 0).lower()}") from None

        channels: list[Any] = []
        if job["stream_result"]:
            stream_conn = self._current_conn() or conn
            for kind in (b"stdout", b"stderr"):
                try:
                    chan, _ = await stream_conn.open_raw_channel(kind, payload, RawChannelSession)
                except ChannelOpenError as exc:
                    self._abort_start(script, channels)
                    raise CommandError(go_open_error_text(exc)) from None
                except (OSError, ConnectionError) as exc:
                    self._abort_start(script, channels)
                    raise CommandError(str(exc) or "EOF") from None
                channels.append(chan)

        argv = build_argv(
            script,
            interpreter=job["interpreter"],
            aliases=cfg.interpreter_aliases,
            is_sudo=job["is_sudo"],
            has_shebang=command.startswith("#!"),
        )
        cwd = job["cwd"] or None
        started_at = go_time_now()
        try:
            proc = await self._start(argv, cwd)
        except CommandError:
            self._abort_start(script, channels)
            raise
        rj = RunningJob(jid=job["jid"], proc=proc, script=script, channels=channels)
        self.running[f"{job['jid']}:{proc.pid}"] = rj
        self._spawn(self._observe(job, rj, started_at))
        if cfg.run_cmd_reply_delay > 0:
            # The real client's observer runs beside the request handler: a short job's
            # cmd_result can reach the server before this reply does.
            await asyncio.sleep(cfg.run_cmd_reply_delay)
        return go_dumps({"Pid": proc.pid, "StartedAt": started_at})

    def _abort_start(self, script: str, channels: list[Any]) -> None:
        with contextlib.suppress(OSError):
            os.remove(script)
        for ch in channels:
            ch.close()

    async def _start(self, argv: list[str], cwd: str | None) -> asyncio.subprocess.Process:
        exe = argv[0]
        if "/" not in exe and shutil.which(exe) is None:
            raise CommandError(
                f'failed to start a command: exec: "{exe}": executable file not found in $PATH'
            )
        if cwd is not None and not _is_dir(cwd):
            raise CommandError(f"failed to start a command: chdir {cwd}: no such file or directory")
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise CommandError(f"failed to start a command: fork/exec {exe}: {why}") from None

    async def _observe(self, job: dict[str, Any], rj: RunningJob, started_at: str) -> None:
        cfg = self.cfg
        limit = int(cfg.send_back_limit)
        out_buf, err_buf = CapacityBuffer(limit), CapacityBuffer(limit)
        summary = SummaryBuffer()
        out_chan = rj.channels[0] if rj.channels else None
        err_chan = rj.channels[1] if len(rj.channels) > 1 else None
        proc = rj.proc

        async def pump(
            stream: asyncio.StreamReader | None,
            buf: CapacityBuffer,
            chan: Any,
            with_summary: bool,
        ) -> None:
            remaining = limit
            if stream is None:
                return
            while True:
                chunk = await stream.read(32768)
                if not chunk:
                    return
                if with_summary:
                    summary.write(chunk)
                    if summary.broken:
                        # The real client writes stdout to the summary scanner first
                        # (io.MultiWriter over an io.Pipe). Once the scanner fails, that
                        # write blocks for good: this chunk and all later output are lost
                        # and the job can only end at timeout_sec, as "unknown".
                        await asyncio.get_running_loop().create_future()
                buf.write(chunk)
                if chan is not None and remaining > 0:
                    part = chunk[:remaining]
                    remaining -= len(part)
                    with contextlib.suppress(Exception):
                        chan.write(part)

        async def run() -> int:
            await asyncio.gather(
                pump(proc.stdout, out_buf, out_chan, True),
                pump(proc.stderr, err_buf, err_chan, False),
            )
            return await proc.wait()

        runner = asyncio.ensure_future(run())
        timeout = float(job["timeout_sec"])
        status = "unknown"
        exec_err = ""
        try:
            if timeout > 0:
                done, _ = await asyncio.wait({runner}, timeout=timeout)
            else:
                done = set()
            if runner in done:
                rc = runner.result()
                exec_err = _exit_error(rc)
                status = "failed" if rc != 0 else "successful"
            finished_at = go_time_now()
            errors = [exec_err] if exec_err else []
            if out_buf.overflow:
                errors.append(f"overflow of stdOut buffer: {out_buf.overflow_message()}")
            if err_buf.overflow:
                errors.append(f"overflow of stdErr buffer: {err_buf.overflow_message()}")
            result_job = dict(job)
            result_job.update(
                status=status,
                finished_at=finished_at,
                pid=proc.pid,
                started_at=started_at,
                error=", ".join(errors),
                result={
                    "stdout": _go_text(bytes(out_buf.data)),
                    "stderr": _go_text(bytes(err_buf.data)),
                    "summary": _go_text(summary.finish()),
                },
            )
            self._send_result(result_job)
        finally:
            if not runner.done():
                if cfg.kill_on_timeout:
                    _kill(proc)
                else:
                    self.leftover_processes.append(proc)
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner
            for ch in rj.channels:  # closed after cmd_result
                with contextlib.suppress(Exception):
                    ch.close()
            with contextlib.suppress(OSError):
                os.remove(rj.script)
            self.running.pop(f"{rj.jid}:{proc.pid}", None)

    def _send_result(self, result_job: dict[str, Any]) -> None:
        data = go_dumps({k: result_job[k] for k, _ in JOB_SCHEMA.fields})
        conn = self._current_conn()
        self._on_result(json.loads(data))
        if conn is None:
            self._event(
                f"cmd_result for job {result_job['jid']} dropped: not connected "
                "(the real client would dereference a nil connection)"
            )
            return
        try:
            conn.send_global_request("cmd_result", data)
            self._event(f"cmd_result sent for job {result_job['jid']}: {result_job['status']}")
        except Exception as exc:
            self._event(f"failed to send command result: {exc}")

    async def shutdown(self) -> None:
        """Kill everything still running (used by ``stop``)."""
        procs = [rj.proc for rj in self.running.values()] + self.leftover_processes
        for p in procs:
            _kill(p)
        for p in procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.wait(), 5)
        self.leftover_processes.clear()


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
