"""The simulated rport client: connections, request handling and the connection loop.

:class:`RportClientSim` reproduces the 0.9.x client's behaviour (protocol.md §4-§10):
full connect (WebSocket + SSH + password auth) to the main server then the fallbacks,
random delay, ``new_connection`` with 3 attempts, backoff 5 s → 10 min with jitter,
switchback to the main server while on a fallback, keepalive pings, sequential
handling of server requests, tunnels, commands, monitoring and uploads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import grp
import hashlib
import json
import logging
import os
import pwd
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.constants import OPEN_ADMINISTRATIVELY_PROHIBITED
from asyncssh.misc import ChannelOpenError

from .commands import CommandError, CommandRunner
from .config import SimulatorConfig, client_configuration, parse_remote, timezone_string
from .gojson import (
    GoDecodeError,
    GoStruct,
    go_dumps,
    go_map,
    go_time_now,
    go_time_utc_now,
    go_unmarshal,
)
from .ssh import (
    FingerprintMismatch,
    RportSSHConnection,
    make_client_options,
    new_tunnel_channel,
)
from .transport import WSBridge, make_http_session, ws_connect
from .tunnels import (
    TCPTunnelSession,
    UDPTunnelSession,
    check_port,
    go_split_host_port,
    tunnel_is_allowed,
)

__all__ = ["ConnectFailure", "ConnectResult", "RportClientSim", "SimConnection", "backoff_delay"]

log = logging.getLogger("tests.simulator")

REMOTE_SCHEMA = GoStruct(
    "models.Remote",
    (
        ("name", "string"),
        ("protocol", "string"),
        ("lhost", "string"),
        ("lport", "string"),
        ("lport_random", "bool"),
        ("owner", "string"),
        ("rhost", "string"),
        ("rport", "string"),
        ("scheme", ("ptr", "string")),
        ("acl", ("ptr", "string")),
        ("idle_timeout_minutes", "int"),
        ("auto_close", "duration"),
        ("http_proxy", "bool"),
        ("host_header", "string"),
        ("auth_user", "string"),
        ("auth_password", "string"),
        ("tunnel_url", "string"),
    ),
)
CAPABILITIES_SCHEMA = GoStruct(
    "models.Capabilities",
    (("ServerVersion", "string"), ("MonitoringVersion", "int"), ("IPAddressesVersion", "int")),
)
CHECK_PORT_SCHEMA = GoStruct(
    "comm.CheckPortRequest", (("HostPort", "string"), ("Timeout", "duration"))
)
CHECK_TUNNEL_SCHEMA = GoStruct("comm.CheckTunnelAllowedRequest", (("Remote", "string"),))
ATTRIBUTES_SCHEMA = GoStruct(
    "clients.Attributes", (("tags", ("slice", "string")), ("labels", ("map", "string")))
)
UPLOADED_FILE_SCHEMA = GoStruct(
    "models.UploadedFile",
    (
        ("ID", "string"),
        ("SourceFilePath", "string"),
        ("DestinationPath", "string"),
        ("DestinationFileMode", "uint32"),
        ("DestinationFileOwner", "string"),
        ("DestinationFileGroup", "string"),
        ("ForceWrite", "bool"),
        ("Sync", "bool"),
        ("Md5Checksum", "bytes"),
    ),
)
DEFAULT_UPLOAD_MODE = 0o764
AUTH_FAILED_TEXT = (
    "ssh: handshake failed: ssh: unable to authenticate, attempted methods [none password], "
    "no supported methods remain"
)
ALREADY_CONNECTED = "client is already connected:"
BAD_HANDSHAKE_TEXT = (
    "websocket: bad handshake - Server maybe busy. Also check your client credentials AND "
    "check for tranparent proxies"
)


def backoff_delay(attempt: int, minimum: float = 5.0, maximum: float = 600.0) -> float:
    """jpillora/backoff (factor 2, jitter): ``min`` for n=0, else U[min, min·2^n] ≤ max."""
    if attempt <= 0:
        return min(minimum, maximum)
    top = minimum * (2.0 ** min(attempt, 64))
    d = random.random() * (top - minimum) + minimum
    return min(d, maximum)


class ConnectFailure(Exception):
    """A failed full connect; ``stage`` is websocket/ssh/fingerprint/auth."""

    def __init__(self, stage: str, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.stage = stage
        self.text = text
        self.status = status


class RequestFailed(Exception):
    """Raised by a request handler: reply failure with ``str(exc)``."""


@dataclass
class ConnectResult:
    """Outcome of :meth:`RportClientSim.connect_once`."""

    ok: bool
    stage: str  # "websocket" | "ssh" | "fingerprint" | "auth" | "new_connection" | "registered"
    error: str = ""
    server_url: str = ""
    status: int | None = None
    remotes: list[dict[str, Any]] | None = None
    fingerprint: str = ""
    connection: SimConnection | None = None


@functools.lru_cache(maxsize=64)
def _base_options(
    user: str, password: str, login_timeout: float | None
) -> asyncssh.SSHClientConnectionOptions:
    return make_client_options(user, password, login_timeout=login_timeout)


@dataclass
class _ServerRequest:
    name: str
    want_reply: bool
    payload: bytes


class SimConnection:
    """One WebSocket + SSH connection of a simulated client."""

    def __init__(self, sim: RportClientSim, url: str, index: int = 0) -> None:
        self.sim = sim
        self.url = url
        self.index = index
        self.ssh: RportSSHConnection | None = None
        self.bridge: WSBridge | None = None
        self.closed = asyncio.Event()
        self.closed_locally = False
        self.close_reason = ""
        self.registered = False
        self.put_capabilities_count = 0
        self._queue: asyncio.Queue[_ServerRequest | None] = asyncio.Queue()
        self._req_task: asyncio.Task[None] | None = None
        self.opened_at = time.monotonic()

    # ---- setup

    async def open(self) -> None:
        """Full connect: WebSocket upgrade, SSH handshake, password auth."""
        sim = self.sim
        cfg = sim.config
        loop = asyncio.get_running_loop()
        try:
            ws = await ws_connect(
                sim.http_session, self.url, version=cfg.version, headers=cfg.headers
            )
        except aiohttp.WSServerHandshakeError as exc:
            sim._event(f"websocket: bad handshake (HTTP {exc.status}: {exc.message}) {self.url}")
            if cfg.probe_after_bad_handshake:
                await self._detect_transparent_proxy()
            raise ConnectFailure("websocket", BAD_HANDSHAKE_TEXT, exc.status) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            text = f"dial {self.url}: {exc or type(exc).__name__}"
            raise ConnectFailure("websocket", text) from None
        self.bridge = WSBridge(ws, fragment_size=cfg.fragment_size)
        opts = copy.copy(_base_options(cfg.auth_user, cfg.auth_pass, cfg.handshake_timeout))
        waiter: asyncio.Future[None] = loop.create_future()
        opts.waiter = waiter
        self.ssh = RportSSHConnection(loop, opts, self, fingerprint=cfg.fingerprint)
        sim._live_connections.add(self)
        self._req_task = loop.create_task(self._serve_requests())
        self.bridge.start(self.ssh)
        try:
            await waiter
        except asyncio.CancelledError:
            await self.aclose()
            raise
        except asyncssh.PermissionDenied:
            await self.aclose()
            raise ConnectFailure("auth", AUTH_FAILED_TEXT) from None
        except FingerprintMismatch as exc:
            await self.aclose()
            raise ConnectFailure("fingerprint", f"ssh: handshake failed: {exc}") from None
        except Exception as exc:
            await self.aclose()
            text = f"ssh: handshake failed: {exc or type(exc).__name__}"
            raise ConnectFailure("ssh", text) from None

    async def _detect_transparent_proxy(self) -> None:
        """Go client: plain ``HEAD`` (ws→http) with a 10 s timeout after a bad handshake."""
        url = self.url.replace("ws", "http", 1)
        try:
            async with self.sim.http_session.head(
                url,
                headers={"User-Agent": "Go-http-client/1.1"},
                allow_redirects=True,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                via = resp.headers.get("Via", "")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.sim._event(f"error detecting proxy: error on http HEAD request: {exc}")
            return
        if via:
            self.sim._event(f"A transparent proxy '{via}' seems to interfere your connection")

    @property
    def server_fingerprint(self) -> str:
        """MD5 fingerprint of the server host key seen during KEX."""
        return self.ssh.server_fingerprint if self.ssh else ""

    # ---- ConnectionDelegate

    def on_global_request(self, name: str, want_reply: bool, payload: bytes) -> None:
        self._queue.put_nowait(_ServerRequest(name, want_reply, payload))

    def on_channel_open(
        self, conn: RportSSHConnection, chantype: bytes, extra: bytes
    ) -> tuple[SSHChannel[bytes], Any]:
        return self.sim._on_channel_open(self, conn, chantype, extra)

    def on_connection_lost(self, exc: Exception | None) -> None:
        if not self.close_reason:
            self.close_reason = str(exc) if exc else "connection closed"
        self.closed.set()
        self._queue.put_nowait(None)
        self.sim._live_connections.discard(self)

    # ---- request loop (sequential, like handleSSHRequests)

    async def _serve_requests(self) -> None:
        while True:
            req = await self._queue.get()
            if req is None:
                return
            try:
                await self.sim._handle_server_request(self, req.name, req.want_reply, req.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never leave a want-reply request unanswered
                log.exception("request %s failed", req.name)
                if req.want_reply and self.ssh is not None:
                    self.ssh.send_global_reply(False, str(exc).encode())

    def reply(self, want_reply: bool, ok: bool, payload: bytes = b"") -> None:
        """Reply if (and only if) the request wanted one."""
        if want_reply and self.ssh is not None:
            self.ssh.send_global_reply(ok, payload)

    # ---- client requests

    async def request(
        self, name: str, payload: bytes = b"", timeout: float | None = None
    ) -> tuple[bool, bytes]:
        """Want-reply global request (raises TimeoutError / ConnectionError)."""
        if self.ssh is None:
            raise ConnectionError("not connected")
        if timeout is None:
            return await self.ssh.request(name, payload)
        return await self.ssh.request_with_timeout(name, payload, timeout)

    def send(self, name: str, payload: bytes) -> None:
        """want_reply=false global request."""
        if self.ssh is None:
            raise ConnectionError("not connected")
        self.ssh.send_global_request(name, payload)

    # ---- teardown

    def abort(self, *, local: bool = True) -> None:
        """Close like Go's ``conn.Close()``: drop TCP, no SSH DISCONNECT, no WS close frame."""
        if local and not self.closed.is_set():
            self.closed_locally = True
            if not self.close_reason:
                self.close_reason = "use of closed network connection"
        if self.ssh is not None:
            self.ssh.abort()
        elif self.bridge is not None:
            self.bridge.close()

    async def disconnect(self, reason: str = "bye") -> None:
        """Close with an SSH DISCONNECT message (not something the Go client does)."""
        if self.ssh is not None:
            self.closed_locally = True
            self.ssh.disconnect(asyncssh.DISC_BY_APPLICATION, reason)
        await self.wait_closed(5)

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the connection is gone."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def aclose(self) -> None:
        """Abort and release every resource of this connection."""
        self.abort()
        if self.ssh is not None:
            self.ssh.cancel_background()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ssh.wait_closed(), 3)
        if self.bridge is not None:
            await self.bridge.aclose()
        if self._req_task is not None and not self._req_task.done():
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._req_task), 1)
            except (TimeoutError, asyncio.CancelledError):
                self._req_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._req_task
        self.closed.set()
        self.sim._live_connections.discard(self)


class _ClosingSession(asyncssh.SSHTCPSession[bytes]):
    """Accept then close (unsupported protocol suffix)."""

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def session_started(self) -> None:
        self._chan.close()


@dataclass
class _Counters:
    registrations: int = 0
    connect_errors: int = 0
    new_connection_failures: int = 0
    disconnects: int = 0
    measurements_sent: int = 0
    pings_sent: int = 0
    server_pings: int = 0
    tunnels_opened: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class RportClientSim:
    """A simulated rport client (one "process")."""

    def __init__(
        self, config: SimulatorConfig, *, http_session: aiohttp.ClientSession | None = None
    ) -> None:
        self.config = config
        self.session_id = config.session_id or str(uuid.uuid4())
        self._own_http = http_session is None
        self._http_session = http_session
        self.state = "stopped"
        self.events: list[tuple[float, str]] = []
        self.current_server_url: str | None = None
        self.conn: SimConnection | None = None
        self.remotes_reported: list[dict[str, Any]] | None = None
        self.new_connection_reply: bytes | None = None
        self.capabilities: dict[str, Any] = {}
        self.last_new_connection_error: str | None = None
        self.last_connect_error: str | None = None
        self.jobs_run: list[dict[str, Any]] = []
        self.cmd_results: list[dict[str, Any]] = []
        self.requests_received: list[tuple[str, bool, bytes]] = []
        self.tunnel_requests: list[str] = []
        self.uploads: list[dict[str, Any]] = []
        self.sent_requests: list[tuple[str, bytes]] = []
        self.server_fingerprint = ""
        self.tags = list(config.tags)
        self.labels = dict(config.labels)
        if config.attributes_file and config.attributes_file_path:
            self._read_attributes_file(config.attributes_file_path)
        self.counters = _Counters()
        self.stats = self.counters
        self._registered = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._event_cond: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._switchback_task: asyncio.Task[None] | None = None
        self._switchback_conn: SimConnection | None = None
        self._monitor_tasks: list[asyncio.Task[None]] = []
        self._ip_task: asyncio.Task[None] | None = None
        self._ip_last_sent: tuple[str, str] | None = None
        self._updates_sent_once = False
        self._live_connections: set[SimConnection] = set()
        self._orphans: set[SimConnection] = set()
        self._data_dir: str | None = config.data_dir
        self._own_data_dir = False
        self._stopping = False
        self._commands: CommandRunner | None = None

    # ------------------------------------------------------------------ helpers

    @property
    def http_session(self) -> aiohttp.ClientSession:
        """The (possibly shared) aiohttp session."""
        if self._http_session is None:
            self._http_session = make_http_session()
        return self._http_session

    @property
    def data_dir(self) -> str:
        """The client's data dir (a temp dir is created on first use if not configured)."""
        if self._data_dir is None:
            self._data_dir = tempfile.mkdtemp(prefix="rport-sim-")
            self._own_data_dir = True
        os.makedirs(self._data_dir, exist_ok=True)
        return self._data_dir

    @property
    def commands(self) -> CommandRunner:
        """The command runner (lazily created)."""
        if self._commands is None:
            self._commands = CommandRunner(
                cfg=self.config,
                data_dir=self.data_dir,
                spawn=self._spawn,
                current_conn=lambda: self.conn.ssh if self.conn is not None else None,
                event=self._event,
                on_result=self.cmd_results.append,
            )
            self._commands.ensure_scripts_dir()
        return self._commands

    @property
    def registered(self) -> bool:
        """True while a connection is registered (new_connection succeeded)."""
        return self._registered.is_set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._event(f"internal error: {exc!r}")
            log.error("simulator task failed", exc_info=exc)

    def _event(self, text: str) -> None:
        self.events.append((time.monotonic(), text))
        if len(self.events) > 5000:
            del self.events[:2500]
        log.debug("[%s] %s", self.config.client_id or self.config.auth_user, text)
        cond = self._event_cond
        if cond is not None:
            self._spawn(self._notify(cond))

    @staticmethod
    async def _notify(cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify_all()

    def has_event(self, pattern: str) -> bool:
        """True if some event line contains ``pattern`` (or matches it as a regex)."""
        return any(pattern in e or re.search(pattern, e) for _, e in self.events)

    async def wait_event(self, pattern: str, timeout: float) -> str:
        """Wait until an event line contains ``pattern`` (substring or regex)."""
        if self._event_cond is None:
            self._event_cond = asyncio.Condition()
        cond = self._event_cond

        def find() -> str | None:
            for _, e in self.events:
                if pattern in e or re.search(pattern, e):
                    return e
            return None

        async def waiter() -> str:
            async with cond:
                while True:
                    found = find()
                    if found is not None:
                        return found
                    await cond.wait()

        return await asyncio.wait_for(waiter(), timeout)

    def _set_state(self, state: str) -> None:
        self.state = state

    # ------------------------------------------------------------------ public API

    async def start(self) -> None:
        """Start the connection loop (and keepalive loop) as owned tasks."""
        if self._loop_task is not None and not self._loop_task.done():
            return
        self._stopping = False
        if self.config.tunnel_allowed:
            for r in self.config.remotes:
                remote = parse_remote(r)
                host = remote["rhost"]
                hp = f"[{host}]:{remote['rport']}" if ":" in host else f"{host}:{remote['rport']}"
                if not await tunnel_is_allowed(self.config.tunnel_allowed, hp):
                    raise ValueError(f'remote {r} is not allowed by "tunnel_allowed" config')
        self._event(f"New client instance with sessionID {self.session_id}")
        self._set_state("connecting")
        self._loop_task = self._spawn(self._connection_loop())
        if self.config.keep_alive > 0:
            self._keepalive_task = self._spawn(self._keepalive_loop())

    async def stop(self) -> None:
        """Close every connection, cancel every task, release every socket."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15.0
        all_conns: set[SimConnection] = set()
        while True:
            conns = set(self._live_connections) | set(self._orphans)
            for c in [self.conn, self._switchback_conn]:
                if c is not None:
                    conns.add(c)
            for c in conns:
                c.abort()
            all_conns |= conns
            tasks = [t for t in self._tasks if not t.done()]
            if not tasks:
                break
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            if loop.time() > deadline:
                log.error("simulator %s: tasks did not stop: %s", self.config.client_id, tasks)
                break
        await asyncio.gather(*(c.aclose() for c in all_conns), return_exceptions=True)
        if self._commands is not None:
            await self._commands.shutdown()
        self._orphans.clear()
        self._switchback_conn = None
        self._clear_current(None)
        if self._own_http and self._http_session is not None:
            await self._http_session.close()
            self._http_session = None
        if self._own_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._own_data_dir = False
            self._commands = None
        self._set_state("stopped")

    async def __aenter__(self) -> RportClientSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_registered(self, timeout: float) -> None:
        """Wait until ``new_connection`` succeeded on the current connection."""
        await asyncio.wait_for(self._registered.wait(), timeout)

    async def wait_disconnected(self, timeout: float) -> None:
        """Wait until no connection is registered."""
        await asyncio.wait_for(self._disconnected.wait(), timeout)

    async def wait_state(self, state: str, timeout: float) -> None:
        """Poll until ``self.state == state``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state != state:
            if loop.time() > deadline:
                raise TimeoutError(f"state {self.state!r} != {state!r}")
            await asyncio.sleep(0.02)

    async def send_ping(self, timeout: float | None = None) -> bytes | str:
        """Manual client ping on the current connection: reply bytes, or failure text."""
        c = self.conn
        if c is None:
            raise ConnectionError("not connected")
        ok, payload = await c.request("ping", b"", timeout or self.config.keep_alive_timeout)
        self.counters.pings_sent += 1
        return payload if ok else payload.decode("utf-8", "replace")

    async def request(
        self, name: str, payload: bytes = b"", timeout: float | None = 30.0
    ) -> tuple[bool, bytes]:
        """Send an arbitrary want-reply request on the current connection."""
        c = self.conn
        if c is None:
            raise ConnectionError("not connected")
        return await c.request(name, payload, timeout)

    async def open_ssh(self, url: str | None = None) -> SimConnection:
        """Full connect (WS + SSH + auth) without ``new_connection``; caller closes it."""
        target = url or self.config.servers()[0]
        c = SimConnection(self, target)
        await c.open()
        return c

    async def connect_once(
        self, url: str | None = None, *, jitter: bool = False, keep_open: bool = False
    ) -> ConnectResult:
        """One full attempt (connect + new_connection) outside the loop.

        With ``keep_open`` a successful connection becomes the current registered
        connection (requests, commands and tunnels are served) until it closes.
        """
        target = url or self.config.servers()[0]
        try:
            result = await self._connect_once(target, jitter, keep_open)
        finally:
            # a sim used only for one-shot attempts should not leak its HTTP session
            idle = self._loop_task is None and self.conn is None and not self._live_connections
            if self._own_http and self._http_session is not None and idle:
                await self._http_session.close()
                self._http_session = None
        return result

    async def _connect_once(self, target: str, jitter: bool, keep_open: bool) -> ConnectResult:
        try:
            c = await self.open_ssh(target)
        except ConnectFailure as exc:
            self._event(f"connect to {target} failed: {exc.text}")
            return ConnectResult(False, exc.stage, exc.text, target, exc.status)
        self.server_fingerprint = c.server_fingerprint
        if jitter:
            await asyncio.sleep(random.uniform(0, self.config.connect_jitter))
        err = await self._send_connection_request(c)
        if err is not None:
            await c.aclose()
            self._orphans.discard(c)
            return ConnectResult(
                False, "new_connection", err, target, fingerprint=c.server_fingerprint
            )
        result = ConnectResult(
            True,
            "registered",
            "",
            target,
            remotes=self.remotes_reported,
            fingerprint=c.server_fingerprint,
        )
        if keep_open:
            self._set_current(c)
            self._spawn(self._watch_single(c))
            result.connection = c
        else:
            await c.aclose()
        return result

    async def _watch_single(self, c: SimConnection) -> None:
        await c.closed.wait()
        if self.conn is c:
            self._clear_current(c)

    # ------------------------------------------------------------------ connection loop

    async def _connection_loop(self) -> None:
        cfg = self.config
        connerr: str | None = None
        connerr_timeout = False
        attempt = 0
        while True:
            if connerr is not None:
                msg = f"connection error: {connerr}"
                if attempt > 0:
                    mx = "infinite" if cfg.max_retry_count < 0 else str(cfg.max_retry_count)
                    msg += f" (attempt: {attempt} of {mx})"
                self._event(msg)
                if 0 <= cfg.max_retry_count <= attempt:
                    self._event("connection error: max retries exceeded")
                    self._set_state("finished")
                    return
                if connerr_timeout and cfg.crash_on_new_connection_timeout:
                    self._event(
                        "panic: invalid argument to Intn (new_connection timed out 3 times; "
                        "the real client process crashes here)"
                    )
                    self._set_state("crashed")
                    return
                delay = backoff_delay(attempt, cfg.backoff_min, cfg.backoff_max)
                attempt += 1
                if connerr_timeout:
                    attempt, delay = 0, 0.0
                self._event(f"Retrying in {delay:.3f}s...")
                self._set_state("backoff")
                await asyncio.sleep(delay)
                connerr, connerr_timeout = None, False

            self._set_state("connecting")
            if self._switchback_conn is not None:
                c, self._switchback_conn = self._switchback_conn, None
                is_primary = True
                self._event("switched back to main server")
            else:
                try:
                    c, is_primary = await self._connect_main_or_fallback()
                except ConnectFailure as exc:
                    self.counters.connect_errors += 1
                    self.last_connect_error = exc.text
                    connerr = exc.text
                    continue
            self.current_server_url = c.url
            self.server_fingerprint = c.server_fingerprint
            if not is_primary:
                self._switchback_task = self._spawn(self._switchback(c))

            self._set_state("waiting")
            if cfg.connect_jitter > 0:
                await asyncio.sleep(random.uniform(0, cfg.connect_jitter))
            self._set_state("registering")
            err = await self._send_connection_request(c)
            if err is not None:
                self._cancel_switchback()
                self.counters.new_connection_failures += 1
                connerr_timeout = err.startswith("conn.SendRequest(new_connection), timeout")
                connerr = err
                continue

            if self._stopping:
                c.abort()
                return
            attempt = 0
            self._set_current(c)
            if cfg.send_updates_status and not self._updates_sent_once:
                self._updates_sent_once = True
                self._send_updates_status(c)
            await c.closed.wait()
            self._clear_current(c)
            self._cancel_switchback()
            self.counters.disconnects += 1
            self._event(f"Disconnected from {c.url}: {c.close_reason}")
            if not c.closed_locally:
                connerr = c.close_reason or "connection closed"

    def _set_current(self, c: SimConnection) -> None:
        c.registered = True
        self.conn = c
        self.current_server_url = c.url
        self.counters.registrations += 1
        self._disconnected.clear()
        self._registered.set()
        self._set_state("connected")

    def _clear_current(self, c: SimConnection | None) -> None:
        if c is not None and self.conn is not c:
            return
        self.conn = None
        self._registered.clear()
        self._disconnected.set()
        if self._monitor_tasks:  # Go's monitor.Stop() cancels only the latest loop
            self._monitor_tasks[-1].cancel()
        if not self._stopping and self.state == "connected":
            self._set_state("disconnected")

    def _cancel_switchback(self) -> None:
        if self._switchback_task is not None:
            self._switchback_task.cancel()
            self._switchback_task = None

    async def _connect(self, url: str, index: int) -> SimConnection:
        self._event(f"Trying to connect to {url} ...")
        c = SimConnection(self, url, index)
        try:
            await c.open()
        except ConnectFailure as exc:
            if exc.stage == "auth":
                self._event(f"auth failed on {url}")
            self._event(f"connect to {url} failed: {exc.text}")
            raise
        self._event(f"connected to {url} (fingerprint {c.server_fingerprint})")
        return c

    async def _connect_main_or_fallback(self) -> tuple[SimConnection, bool]:
        last: ConnectFailure | None = None
        for i, url in enumerate(self.config.servers()):
            try:
                return await self._connect(url, i), i == 0
            except ConnectFailure as exc:
                last = exc
        assert last is not None
        raise last

    async def _switchback(self, fallback: SimConnection) -> None:
        main = self.config.servers()[0]
        while True:
            await asyncio.sleep(self.config.server_switchback_interval)
            try:
                new = await self._connect(main, 0)
            except ConnectFailure as exc:
                self._event(f"Switchback failed: {exc.text}")
                continue
            self._event("Connected to main server, switching back.")
            self._switchback_conn = new
            self._switchback_task = None
            fallback.abort(local=True)
            return

    # ------------------------------------------------------------------ new_connection

    def connection_request(self) -> dict[str, Any]:
        """The ConnectionRequest object (§4.2, untagged keys)."""
        cfg = self.config
        host = cfg.hostname
        req: dict[str, Any] = {
            "ID": cfg.effective_client_id(),
            "Name": cfg.effective_name(),
            "SessionID": self.session_id,
            "OS": f"Linux {host} 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023 "
            "x86_64 x86_64 x86_64 GNU/Linux",
            "OSFullName": "Ubuntu 22.04",
            "OSVersion": "22.04",
            "OSVirtualizationSystem": "KVM",
            "OSVirtualizationRole": "guest",
            "OSArch": "amd64",
            "OSFamily": "debian",
            "OSKernel": "linux",
            "Version": cfg.version,
            "Hostname": host,
            "CPUFamily": "6",
            "CPUModel": "85",
            "CPUModelName": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
            "CPUVendor": "GenuineIntel",
            "NumCPUs": 4,
            "MemoryTotal": 8337022976,
            "Timezone": timezone_string(),
            "IPv4": ["10.0.0.5"],
            "IPv6": ["fe80::5054:ff:fe12:3456"],
            "Tags": list(self.tags) or None,
            "Labels": go_map(self.labels) or None,
            "Remotes": [parse_remote(r) for r in cfg.remotes] or None,
            "ClientConfiguration": client_configuration(cfg, cfg.data_dir or "/var/lib/rport"),
        }
        for k, v in cfg.connection_request_overrides.items():
            if v is Ellipsis:
                req.pop(k, None)
            else:
                req[k] = v
        return req

    async def _with_retry(
        self, c: SimConnection, name: str, payload: bytes, timeout: float
    ) -> tuple[bool, bytes]:
        """comm.WithRetry: 3 attempts, only timeouts are retried (sleep w·r² + jitter)."""
        cfg = self.config
        last: Exception | None = None
        for r in range(3):
            if r:
                await asyncio.sleep(
                    cfg.request_retry_wait * r * r + random.uniform(0, cfg.request_retry_jitter)
                )
            try:
                return await c.request(name, payload, timeout)
            except TimeoutError as exc:
                last = exc
                continue
        assert last is not None
        raise last

    async def _send_connection_request(self, c: SimConnection) -> str | None:
        """Send ``new_connection``; returns None on success or the error text."""
        cfg = self.config
        payload = go_dumps(self.connection_request())
        self.sent_requests.append(("new_connection", payload))
        self._event("Sending connection request.")
        try:
            ok, reply = await self._with_retry(
                c, "new_connection", payload, cfg.new_connection_timeout
            )
        except (TimeoutError, ConnectionError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            self._event(f"connection request err = {text}; closing sshConn")
            c.abort()
            return text
        if not ok:
            msg = reply.decode("utf-8", "replace")
            self.last_new_connection_error = msg
            self._event(f"new_connection rejected: {msg}")
            if ALREADY_CONNECTED in msg:
                c.abort()
                return "client is already connected or previous session was not properly closed"
            self._orphans.add(c)  # the real client leaves it open
            self._spawn(self._drop_orphan(c))
            return msg
        try:
            remotes = go_unmarshal(reply, ("slice", ("ptr", REMOTE_SCHEMA)))
        except GoDecodeError as exc:
            msg = f"can't decode reply payload: {exc}"
            self.last_new_connection_error = msg
            self._event(f"new_connection reply undecodable: {msg}")
            self._orphans.add(c)
            self._spawn(self._drop_orphan(c))
            return msg
        self.new_connection_reply = reply
        self.remotes_reported = list(remotes or [])
        self.last_new_connection_error = None
        self._event(f"Connected to {c.url}: new_connection succeeded, registered")
        for r in self.remotes_reported:
            self._event(
                f"Local port {r.get('rhost')}:{r.get('rport')} has become available on "
                f"{r.get('lhost')}:{r.get('lport')}"
            )
        return None

    async def _drop_orphan(self, c: SimConnection) -> None:
        await c.closed.wait()
        self._orphans.discard(c)

    # ------------------------------------------------------------------ keepalive

    async def _keepalive_loop(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.keep_alive + random.uniform(0, cfg.keep_alive_jitter))
            c = self.conn
            if c is None:
                continue
            t0 = time.monotonic()
            try:
                ok, _ = await self._with_retry(c, "ping", b"", cfg.keep_alive_timeout)
                self.counters.pings_sent += 1
                err = "" if ok else "failure reply"
            except (TimeoutError, ConnectionError, OSError) as exc:
                ok, err = False, str(exc) or type(exc).__name__
            if not ok:
                self._event(f"Failed to send keepalive (client to server ping): {err}")
                c.abort()
            else:
                self._event(f"ping to {c.url} succeeded within {time.monotonic() - t0:.3f}s")

    # ------------------------------------------------------------------ server requests

    async def _handle_server_request(
        self, c: SimConnection, name: str, want_reply: bool, payload: bytes
    ) -> None:
        self.requests_received.append((name, want_reply, payload))
        handler = {
            "put_capabilities": self._req_put_capabilities,
            "check_port": self._req_check_port,
            "check_tunnel_allowed": self._req_check_tunnel_allowed,
            "run_cmd": self._req_run_cmd,
            "refresh_updates_status": self._req_refresh_updates_status,
            "update_client_metadata": self._req_update_client_metadata,
            "upload": self._req_upload,
        }.get(name)
        if name == "ping":
            self.counters.server_pings += 1
            c.reply(want_reply, True, b"")
            if self.config.double_ping_reply and want_reply and c.ssh is not None:
                c.ssh.send_global_reply(True, b"null")
            return
        if handler is None:
            self._event(f"Unknown request: {name!r}")
            c.reply(want_reply, False, b"unknown request")
            return
        try:
            resp = await handler(c, payload)
        except RequestFailed as exc:
            self._event(f"Failed to handle {name!r} request: {exc}")
            c.reply(want_reply, False, str(exc).encode())
            return
        c.reply(want_reply, True, resp)

    async def _req_put_capabilities(self, c: SimConnection, payload: bytes) -> bytes:
        try:
            caps = go_unmarshal(payload, CAPABILITIES_SCHEMA)
        except GoDecodeError as exc:
            self._event(f"failed to decode *models.Capabilities: {exc}")
            return b"null"
        c.put_capabilities_count += 1
        self.capabilities = caps
        self._event(f"Server has capabilities: {payload.decode('utf-8', 'replace')}")
        if caps["MonitoringVersion"] > 0 and self.config.monitoring_enabled:
            self._monitor_tasks.append(self._spawn(self._monitor_loop()))
        ip_wanted = caps["IPAddressesVersion"] > 0 and self.config.ip_addresses
        if ip_wanted and (self._ip_task is None or self._ip_task.done()):
            self._ip_task = self._spawn(self._ip_loop())
        return b"null"

    async def _req_check_port(self, c: SimConnection, payload: bytes) -> bytes:
        try:
            req = go_unmarshal(payload, CHECK_PORT_SCHEMA)
        except GoDecodeError as exc:
            raise RequestFailed(f"failed to decode *comm.CheckPortRequest: {exc}") from None
        is_open, err = await check_port(req["HostPort"], req["Timeout"])
        return go_dumps({"Open": is_open, "ErrMsg": err})

    async def _req_check_tunnel_allowed(self, c: SimConnection, payload: bytes) -> bytes:
        try:
            req = go_unmarshal(payload, CHECK_TUNNEL_SCHEMA)
        except GoDecodeError as exc:
            raise RequestFailed(str(exc)) from None
        try:
            allowed = await tunnel_is_allowed(self.config.tunnel_allowed, req["Remote"])
        except ValueError as exc:
            raise RequestFailed(str(exc)) from None
        if not allowed:
            self._event(f'Tunnel to "{req["Remote"]}" not allowed based on "tunnel_allowed" config')
        return go_dumps({"IsAllowed": allowed})

    async def _req_run_cmd(self, c: SimConnection, payload: bytes) -> bytes:
        try:
            self.jobs_run.append(json.loads(payload))
        except ValueError:
            self.jobs_run.append({"_raw": payload.decode("utf-8", "replace")})
        if c.ssh is None:
            raise RequestFailed("not connected")
        try:
            return await self.commands.handle_run_cmd(c.ssh, payload)
        except CommandError as exc:
            raise RequestFailed(str(exc)) from None

    async def _req_refresh_updates_status(self, c: SimConnection, payload: bytes) -> bytes:
        self._spawn(self._send_updates_status_later())
        return b"null"

    async def _send_updates_status_later(self) -> None:
        await asyncio.sleep(0.05)  # after the reply, asynchronously (updates loop)
        if self.conn is not None:
            self._send_updates_status(self.conn)

    def _send_updates_status(self, c: SimConnection) -> None:
        doc: dict[str, Any] = {
            "refreshed": go_time_now(),
            "updates_available": 0,
            "security_updates_available": 0,
            "update_summaries": None,
            "reboot_pending": False,
        }
        if self.config.updates_status:
            doc.update(self.config.updates_status)
        data = go_dumps(doc)
        with contextlib.suppress(Exception):
            c.send("updates_status", data)
            self.sent_requests.append(("updates_status", data))
            self._event("updates_status sent")

    @property
    def attributes_file_path(self) -> str | None:
        """Where ``update_client_metadata`` writes (None: not configured)."""
        if not self.config.attributes_file:
            return None
        return self.config.attributes_file_path or os.path.join(self.data_dir, "attributes.json")

    def _read_attributes_file(self, path: str) -> None:
        """Tags and labels from the attributes file replace the configured ones (§5.8)."""
        try:
            with open(path, "rb") as f:
                attrs = go_unmarshal(f.read(), ATTRIBUTES_SCHEMA)
        except (OSError, GoDecodeError) as exc:
            self._event(f"ignoring attributes_file: {exc}")
            return
        self.tags = list(attrs["tags"] or [])
        self.labels = dict(attrs["labels"] or {})

    async def _req_update_client_metadata(self, c: SimConnection, payload: bytes) -> bytes:
        path = self.attributes_file_path
        if path is None:
            raise RequestFailed("attributes file path not set")
        try:
            attrs = go_unmarshal(payload, ATTRIBUTES_SCHEMA)
        except GoDecodeError as exc:
            raise RequestFailed(f"payload unreadable: {exc}") from None
        data = go_dumps({"tags": attrs["tags"], "labels": go_map(attrs["labels"])})
        try:
            _write_file(path, data, 0o600)
        except OSError as exc:
            raise RequestFailed(f"can't write attributes to file: {exc}") from None
        self.tags = list(attrs["tags"] or [])
        self.labels = dict(attrs["labels"] or {})
        self._event(f"attributes updated: {data.decode()}")
        return go_dumps({"status": "OK"})

    # ------------------------------------------------------------------ upload (§6.4)

    async def _req_upload(self, c: SimConnection, payload: bytes) -> bytes:
        cfg = self.config
        if not cfg.file_reception_enabled:
            raise RequestFailed(
                "uploads are disabled on this client, check [file-reception] enabled option"
            )
        try:
            uf = go_unmarshal(payload, UPLOADED_FILE_SCHEMA)
        except GoDecodeError as exc:
            raise RequestFailed(str(exc)) from None
        self.uploads.append(
            dict(uf, Md5Checksum=base64.b64encode(uf["Md5Checksum"] or b"").decode())
        )
        ignored = _upload_precheck(uf, cfg.file_reception_protected)
        if ignored is not None:
            return ignored
        src = uf["SourceFilePath"]
        tmp = _upload_temp_path(self.data_dir, src, uf["DestinationFileMode"])
        if c.ssh is None:
            raise RequestFailed("not connected")
        try:
            sftp = await c.ssh.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            raise RequestFailed(
                f"failed to establish sftp connection to the server: {exc}"
            ) from None
        try:
            async with sftp:
                await sftp.get(src, tmp)
        except asyncssh.SFTPNoSuchFile:
            raise RequestFailed(f"open {src}: file does not exist") from None
        except asyncssh.SFTPPermissionDenied:
            raise RequestFailed(f"open {src}: permission denied") from None
        except (asyncssh.Error, OSError) as exc:
            raise RequestFailed(str(exc)) from None
        reply = _upload_finish(uf, tmp)
        self._event(f"upload {uf['ID']} written to {uf['DestinationPath']}")
        return reply

    # ------------------------------------------------------------------ channels (§6.1)

    def _on_channel_open(
        self, sc: SimConnection, conn: RportSSHConnection, chantype: bytes, extra: bytes
    ) -> tuple[SSHChannel[bytes], Any]:
        remote = extra.decode("utf-8", "replace")
        protocol = "tcp"
        if "/" in remote:
            remote, protocol = remote.split("/", 1)
        self.tunnel_requests.append(extra.decode("utf-8", "replace"))
        chan = new_tunnel_channel(conn)

        async def accept() -> asyncssh.SSHTCPSession[bytes]:
            try:
                allowed = await tunnel_is_allowed(self.config.tunnel_allowed, remote)
            except ValueError as exc:
                self._event(f"Could not check if remote is allowed: {exc}")
                allowed = False
            if not allowed:
                self._event(f'Rejecting stream to "{remote}" based on "tunnel_allowed" config')
                raise ChannelOpenError(
                    OPEN_ADMINISTRATIVELY_PROHIBITED, 'not allowed with "tunnel_allowed" config', ""
                )
            self.counters.tunnels_opened += 1
            try:
                host, port = go_split_host_port(remote)
            except ValueError as exc:
                self._event(f"tunnel {remote}: {exc}")
                return _ClosingSession()
            if protocol in ("", "tcp"):
                self._event(f"tcp tunnel channel to {remote} accepted")
                return TCPTunnelSession(host, port, self._spawn, self._event)
            if protocol == "udp":
                self._event(f"udp tunnel channel to {remote} accepted")
                return UDPTunnelSession(host, port, self._spawn, self._event)
            self._event(f"Unsupported protocol {protocol} for tunnel {remote}")
            return _ClosingSession()

        return chan, accept()

    # ------------------------------------------------------------------ monitoring (§10)

    async def _wait_current(self, limit: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registered.wait(), limit)

    async def _monitor_loop(self) -> None:
        await self._wait_current()
        while True:
            c = self.conn
            if c is not None:
                data = go_dumps(_measurement())
                with contextlib.suppress(Exception):
                    c.send("save_measurement", data)
                    self.counters.measurements_sent += 1
            await asyncio.sleep(self.config.monitoring_interval)

    async def _ip_loop(self) -> None:
        await self._wait_current()
        pair = self.config.ip_addresses
        while pair is not None:
            c = self.conn
            if c is not None and pair != self._ip_last_sent:
                data = go_dumps(
                    {
                        "ipv4": pair[0],
                        "ipv6": pair[1],
                        "updated_at": "0001-01-01T00:00:00Z",
                        "error": "",
                    }
                )
                try:
                    c.send("ip_addresses", data)
                except Exception as exc:
                    self._event(f"failed updating IP addresses: {exc}")
                else:
                    self._ip_last_sent = pair
                    self.sent_requests.append(("ip_addresses", data))
                    self._event("ip_addresses sent")
            await asyncio.sleep(self.config.ip_refresh_interval)
            pair = self.config.ip_addresses


def _measurement() -> dict[str, Any]:
    total = 53687091200
    free = random.randint(10, 40) * 1024**3
    procs = [
        {
            "pid": 812,
            "parent_pid": 1,
            "name": "sshd",
            "cmdline": "/usr/sbin/sshd -D",
            "state": "sleeping",
            "rss": 7340032,
            "vms": 15728640,
            "memory_usage_percent": 0.09,
        },
        {
            "pid": 1,
            "parent_pid": 0,
            "name": "systemd",
            "cmdline": "/sbin/init",
            "state": "sleeping",
            "rss": 12582912,
            "vms": 171966464,
            "memory_usage_percent": 0.15,
        },
    ]
    return {
        "client_id": "",
        "timestamp": go_time_utc_now(),
        "cpu_usage_percent": round(random.uniform(0.5, 60.0), 2),
        "memory_usage_percent": round(random.uniform(10.0, 80.0), 2),
        "io_usage_percent": round(random.uniform(0.0, 5.0), 2),
        "processes": go_dumps(procs).decode(),
        "mountpoints": go_dumps({"free_b./": free, "total_b./": total}).decode(),
        "net_lan": None,
        "net_wan": None,
    }


def _glob_to_regex(pat: str) -> re.Pattern[str]:
    """Go ``filepath.Match`` semantics (``*`` and ``?`` do not match ``/``)."""
    out = []
    i = 0
    while i < len(pat):
        ch = pat[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out.append(re.escape(ch))
            else:
                body = pat[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif ch == "\\" and i + 1 < len(pat):
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def _write_file(path: str, data: bytes, mode: int = 0o666) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)


def _upload_precheck(uf: dict[str, Any], protected: list[str]) -> bytes | None:
    """Validation of §6.4; returns an ``ignored`` reply or None to proceed."""
    src, dest = uf["SourceFilePath"], uf["DestinationPath"]
    if not src:
        raise RequestFailed("empty source file name")
    if not dest:
        raise RequestFailed("empty destination file path")
    dest_dir = os.path.dirname(dest) or "."
    for pat in protected:
        rx = _glob_to_regex(pat)
        for target in (dest_dir, dest):
            if rx.fullmatch(target):
                raise RequestFailed(
                    f"target path {target} matches protected pattern {pat}, "
                    "therefore the file push request is rejected"
                )
    expected: bytes = uf["Md5Checksum"] or b""
    mode: int = uf["DestinationFileMode"]
    if not os.path.exists(dest) or uf["ForceWrite"]:
        return None
    if uf["Sync"]:
        with open(dest, "rb") as f:
            if hashlib.md5(f.read()).digest() != expected:
                return None
        if mode > 0 and (os.stat(dest).st_mode & 0o777) != (mode & 0o777):
            return None
        if _owner_or_group_differ(dest, uf["DestinationFileOwner"], uf["DestinationFileGroup"]):
            return None
    msg = f"file {dest} already exists, should not be synched or overwritten with force"
    return go_dumps(
        {"uuid": uf["ID"], "filepath": dest, "size": 0, "message": msg, "status": "ignored"}
    )


def _owner_or_group_differ(path: str, owner: str, group: str) -> bool:
    """The sync check on owner/group; unknown names fail the upload as Go's lookups do."""
    if not owner and not group:
        return False
    st = os.stat(path)
    if owner:
        try:
            uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise RequestFailed(f"user: unknown user {owner}") from None
        if st.st_uid != uid:
            return True
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise RequestFailed(f"group: unknown group {group}") from None
        if st.st_gid != gid:
            return True
    return False


def _upload_temp_path(data_dir: str, src: str, mode: int) -> str:
    upload_dir = os.path.join(data_dir, "filepush")
    os.makedirs(upload_dir, mode=mode or DEFAULT_UPLOAD_MODE, exist_ok=True)
    tmp = os.path.join(upload_dir, os.path.basename(src))
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    return tmp


def _upload_finish(uf: dict[str, Any], tmp: str) -> bytes:
    """MD5 check, chmod/chown, move into place; returns the UploadResponse."""
    dest = uf["DestinationPath"]
    expected: bytes = uf["Md5Checksum"] or b""
    mode: int = uf["DestinationFileMode"]
    with open(tmp, "rb") as f:
        content = f.read()
    if hashlib.md5(content).digest() != expected:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise RequestFailed(
            f"md5 check failed: checksum from server {expected.hex()} doesn't equal "
            "the calculated checksum"
        )
    parts: list[str] = []
    if mode:
        try:
            os.chmod(tmp, mode & 0o7777)
        except OSError as exc:
            parts.append(f"chmod failed: {exc}")
    owner, group = uf["DestinationFileOwner"], uf["DestinationFileGroup"]
    if owner or group:
        try:
            if owner and group:
                shutil.chown(tmp, owner, group)
            elif owner:
                shutil.chown(tmp, user=owner)
            else:
                shutil.chown(tmp, group=group)
        except (OSError, LookupError) as exc:
            parts.append(f"chown of {tmp} failed: {exc}")
    try:
        os.makedirs(os.path.dirname(dest) or ".", mode=mode or DEFAULT_UPLOAD_MODE, exist_ok=True)
        if os.path.exists(dest):
            os.remove(dest)
        os.rename(tmp, dest)
    except OSError as exc:
        raise RequestFailed(f"rename {tmp} {dest}: {(exc.strerror or str(exc)).lower()}") from None
    parts.append(f"file successfully copied to destination {dest}")
    return go_dumps(
        {
            "uuid": uf["ID"],
            "filepath": dest,
            "size": len(content),
            "message": ".".join(parts),
            "status": "success",
        }
    )
