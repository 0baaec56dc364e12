"""End-to-end tests of the client simulator against a tiny throwaway server.

The server below is deliberately minimal (aiohttp WebSocket + asyncssh server over a
socketpair) and independent of ``rportd``: it only does what these tests need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import pytest
from aiohttp import web
from asyncssh.channel import SSHTCPChannel
from asyncssh.constants import (
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    MSG_USERAUTH_REQUEST,
)
from asyncssh.packet import SSHPacket
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.simulator import (
    GobDecoder,
    GobEncoder,
    RportClientSim,
    SimulatorConfig,
    UDPAddr,
    UDPMessage,
    open_raw,
)

SEED_FP = "5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:11"
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _host_key(seed: str) -> asyncssh.SSHKey:
    nxt = seed.encode()
    for _ in range(2048):
        nxt = hashlib.sha512(nxt).digest()[:32]
    out = b""
    while len(out) < 40:
        h = hashlib.sha512(nxt).digest()
        nxt, out = h[:32], out + h[32:]
    d = int.from_bytes(out[:40], "big") % (P256_N - 1) + 1
    pem = ec.derive_private_key(d, ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return asyncssh.import_private_key(pem)


# --------------------------------------------------------------------------- mini server


class Collector(asyncssh.SSHTCPSession[bytes]):
    """Collects channel data."""

    def __init__(self) -> None:
        self.data = b""
        self.got = asyncio.Event()
        self.closed = asyncio.Event()
        self.eof = False
        self.chan: Any = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.data += data
        self.got.set()

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class MiniSSHServer(asyncssh.SSHServer):
    def __init__(self, srv: MiniServer) -> None:
        self.srv = srv

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.srv.user and password == self.srv.password


class MiniConn(asyncssh.SSHServerConnection):
    """Server connection accepting ``SSH-rport-v1-client`` (and nothing fancy)."""

    srv: MiniServer

    def _send_version(self) -> None:
        self._server_version = b"SSH-rport-v1-server"
        self._send(b"SSH-rport-v1-server\r\n")

    def _recv_version(self) -> bool:
        idx = self._inpbuf.find(b"\n")
        if idx < 0:
            return False
        line = self._inpbuf[:idx].rstrip(b"\r")
        self._inpbuf = self._inpbuf[idx + 1 :]
        self.srv.client_versions.append(line)
        self._client_version = line
        self._send_kexinit()
        self._kexinit_sent = True
        self._recv_handler = self._recv_pkthdr
        return True

    def _record_userauth(self, pkttype: int, pktid: int, packet: SSHPacket) -> Any:
        p = SSHPacket(packet.get_remaining_payload())
        p.get_string()
        p.get_string()
        self.srv.auth_methods.append(p.get_string().decode())
        return asyncssh.SSHServerConnection._process_userauth_request(self, pkttype, pktid, packet)

    def _tolerant_response(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        if self._global_request_waiters:
            waiter = self._global_request_waiters.pop(0)
            if not waiter.cancelled():
                waiter.set_result((pkttype, packet))
        else:  # e.g. the second reply of a 0.8.2-0.9.6 client to our ping
            self.srv.stray_replies.append((pkttype, packet.get_remaining_payload()))

    _packet_handlers = dict(asyncssh.SSHServerConnection._packet_handlers)
    _packet_handlers[MSG_USERAUTH_REQUEST] = _record_userauth
    _packet_handlers[MSG_REQUEST_SUCCESS] = _tolerant_response
    _packet_handlers[MSG_REQUEST_FAILURE] = _tolerant_response

    def reply(self, ok: bool, payload: bytes) -> None:
        _, _, want_reply = self._global_request_queue.pop(0)
        if want_reply:
            self.send_packet(MSG_REQUEST_SUCCESS if ok else MSG_REQUEST_FAILURE, payload)
        if self._global_request_queue:
            self._service_next_global_request()

    def _process_new_connection_global_request(self, packet: SSHPacket) -> None:
        payload = packet.get_remaining_payload()
        self.srv.new_connections.append(json.loads(payload))
        if self.srv.hold_new_connection:
            return  # never answer (blocks every later want-reply request of the client)
        if self.srv.reject_with is not None:
            self.reply(False, self.srv.reject_with.encode())
            return
        self.reply(True, self.srv.new_connection_reply)
        caps = b'{"ServerVersion":"0.9.14","MonitoringVersion":1,"IPAddressesVersion":1}'
        self._send_global_request(b"put_capabilities", caps)
        self.srv.registered.put_nowait(self)

    def _process_cmd_result_global_request(self, packet: SSHPacket) -> None:
        self.srv.cmd_results.put_nowait(json.loads(packet.get_remaining_payload()))
        self.reply(True, b"")

    def _process_ping_global_request(self, packet: SSHPacket) -> None:
        self.srv.pings += 1
        self.reply(self.srv.ping_ok, b"" if self.srv.ping_ok else b"nope")

    def _generic(self, packet: SSHPacket) -> None:
        self.srv.other_requests.append(packet.get_remaining_payload())
        self.reply(True, b"")

    _process_save_measurement_global_request = _generic
    _process_updates_status_global_request = _generic
    _process_ip_addresses_global_request = _generic

    def _stream_open(self, packet: SSHPacket) -> tuple[Any, Any]:
        extra = packet.get_remaining_payload()
        chan: SSHTCPChannel[bytes] = SSHTCPChannel(self, self._loop, None, "strict", 1 << 21, 32768)
        sess = Collector()
        self.srv.stream_channels.append((extra, sess))
        return chan, sess

    _process_stdout_open = _stream_open
    _process_stderr_open = _stream_open

    async def request(self, name: str, payload: bytes, timeout: float = 10) -> tuple[bool, bytes]:
        pkttype, packet = await asyncio.wait_for(
            self._make_global_request(name.encode(), payload), timeout
        )
        return pkttype == MSG_REQUEST_SUCCESS, packet.get_remaining_payload()

    async def open_rport(self, dest: str) -> tuple[Any, Collector]:
        chan: SSHTCPChannel[bytes] = SSHTCPChannel(self, self._loop, None, "strict", 1 << 21, 32768)
        sess = await chan._open_forward(Collector, b"rport", dest.encode())
        return chan, sess  # type: ignore[return-value]


def runner_port(runner: web.AppRunner) -> int:
    """Port of the first listening socket of an AppRunner."""
    addrs = runner.addresses
    return int(addrs[0][1])


class MiniServer:
    """aiohttp WebSocket endpoint bridged (socketpair) to an asyncssh server connection."""

    def __init__(self, *, user: str = "client1", password: str = "secret", port: int = 0) -> None:
        self.user, self.password, self.port = user, password, port
        self.key = _host_key("Z4mQqmkDnexNNR4giNU3Me")
        self.options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[self.key],
            server_factory=lambda: MiniSSHServer(self),
            sftp_factory=True,
            allow_scp=False,
            keepalive_interval=0,
        )
        self.reject_with: str | None = None
        self.hold_new_connection = False
        self.stray_replies: list[tuple[int, bytes]] = []
        self.ping_ok = True
        self.new_connection_reply = b"[]"
        self.client_versions: list[bytes] = []
        self.auth_methods: list[str] = []
        self.new_connections: list[dict[str, Any]] = []
        self.upgrade_headers: list[dict[str, str]] = []
        self.frames: list[tuple[int, bool, int]] = []
        self.conns: list[MiniConn] = []
        self.registered: asyncio.Queue[MiniConn] = asyncio.Queue()
        self.cmd_results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.other_requests: list[bytes] = []
        self.stream_channels: list[tuple[bytes, Collector]] = []
        self.pings = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner_port(self._runner)

    async def stop(self) -> None:
        for c in self.conns:
            c.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Sec-WebSocket-Protocol") != "rport-v1":
            return web.Response(status=404)
        self.upgrade_headers.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("rport-v1",), max_msg_size=0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        opts = copy.copy(self.options)

        def factory() -> MiniConn:
            c = MiniConn(loop, opts, wait=None)
            c.srv = self
            self.conns.append(c)
            return c

        _, conn = await loop.connect_accepted_socket(factory, b)

        async def to_ssh() -> None:
            async for msg in ws:
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    await loop.sock_sendall(a, msg.data)

        async def from_ssh() -> None:
            while data := await loop.sock_recv(a, 65536):
                await ws.send_bytes(data)

        t1, t2 = loop.create_task(to_ssh()), loop.create_task(from_ssh())
        self._tasks |= {t1, t2}
        try:
            await asyncio.wait({t1, t2}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (t1, t2):
                t.cancel()
            await asyncio.gather(t1, t2, return_exceptions=True)
            self._tasks -= {t1, t2}
            a.close()
            conn.abort()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def server() -> AsyncIterator[MiniServer]:
    srv = MiniServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


def sim_config(srv: MiniServer, tmp_path: Path, **kw: Any) -> SimulatorConfig:
    base: dict[str, Any] = dict(
        server=f"127.0.0.1:{srv.port}",
        auth="client1:secret",
        client_id="sim-1",
        connect_jitter=0.0,
        keep_alive=0,
        backoff_min=0.05,
        backoff_max=0.2,
        fingerprint=SEED_FP[:8],
        commands_allow=[".*"],
        commands_deny=[],
        data_dir=str(tmp_path / "sim"),
        monitoring_interval=0.2,
    )
    base.update(kw)
    return SimulatorConfig(**base)


@pytest.fixture
async def sim_factory() -> AsyncIterator[Any]:
    sims: list[RportClientSim] = []

    def make(cfg: SimulatorConfig) -> RportClientSim:
        s = RportClientSim(cfg)
        sims.append(s)
        return s

    yield make
    for s in sims:
        await s.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- tests


async def test_register_command_and_tcp_tunnel(
    server: MiniServer, echo_port: int, sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(sim_config(server, tmp_path, tags=["t1"], labels={"b": "2", "a": "1"}))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)

    # wire identity
    assert server.client_versions == [b"SSH-rport-v1-client"]
    assert server.auth_methods[:2] == ["none", "password"]
    hdrs = server.upgrade_headers[0]
    assert hdrs["User-Agent"] == "rport 0.9.14"
    assert "Sec-WebSocket-Extensions" not in hdrs
    assert sim.server_fingerprint == SEED_FP
    assert conn.get_extra_info("client_version") is None or True

    # new_connection payload
    req = server.new_connections[0]
    assert req["ID"] == "sim-1" and req["SessionID"] == sim.session_id
    assert req["Tags"] == ["t1"] and list(req["Labels"]) == ["a", "b"]
    assert req["ClientConfiguration"]["client"]["auth"] == "client1:secret"
    assert sim.remotes_reported == []

    # put_capabilities -> monitoring
    await sim.wait_event("Server has capabilities", 5)
    assert sim.capabilities["MonitoringVersion"] == 1
    for _ in range(100):
        if any(b'"cpu_usage_percent"' in r for r in server.other_requests):
            break
        await asyncio.sleep(0.05)
    m = next(json.loads(r) for r in server.other_requests if b"cpu_usage_percent" in r)
    assert isinstance(m["processes"], str) and m["timestamp"].endswith("Z")

    # run_cmd echo hi -> cmd_result
    job = {
        "jid": "j-1", "status": "", "finished_at": None, "client_id": "sim-1",
        "client_name": "x", "command": "echo hi", "cwd": "", "interpreter": "", "pid": None,
        "started_at": "2024-05-06T07:08:09.123456789+02:00", "created_by": "admin",
        "timeout_sec": 10, "multi_job_id": None, "schedule_id": None, "error": "",
        "result": None, "is_sudo": False, "is_script": False, "stream_result": False,
    }  # fmt: skip
    ok, reply = await conn.request("run_cmd", json.dumps(job).encode())
    assert ok, reply
    rr = json.loads(reply)
    assert list(rr) == ["Pid", "StartedAt"] and rr["Pid"] > 0
    res = await asyncio.wait_for(server.cmd_results.get(), 10)
    assert res["status"] == "successful" and res["result"]["stdout"] == "hi\n"
    assert res["pid"] == rr["Pid"] and res["jid"] == "j-1" and res["error"] == ""
    assert list(res) == list(job)
    assert sim.jobs_run[0]["command"] == "echo hi"

    # rport TCP channel to the echo server
    chan, sess = await conn.open_rport(f"127.0.0.1:{echo_port}")
    chan.write(b"hello tunnel")
    while sess.data != b"hello tunnel":
        sess.got.clear()
        await asyncio.wait_for(sess.got.wait(), 5)
    big = bytes(range(256)) * 4096  # 1 MiB, exercises windows/back-pressure
    sess.data = b""
    chan.write(big)
    while len(sess.data) < len(big):
        sess.got.clear()
        await asyncio.wait_for(sess.got.wait(), 10)
    assert sess.data == big
    chan.close()
    await asyncio.wait_for(sess.closed.wait(), 5)

    # tunnel to a closed port: accepted, then closed with no data
    _, sess2 = await conn.open_rport(f"127.0.0.1:{_free_port()}")
    await asyncio.wait_for(sess2.closed.wait(), 5)
    assert sess2.data == b"" and not sess2.eof

    await sim.stop()
    assert sim.state == "stopped"


async def test_misc_requests(server: MiniServer, echo_port: int, sim_factory: Any, tmp_path: Path):
    sim = sim_factory(sim_config(server, tmp_path, tunnel_allowed=["127.0.0.1:" + str(echo_port)]))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)

    assert await conn.request("bogus", b"{}") == (False, b"unknown request")
    assert await conn.request("ping", b"") == (True, b"")

    hp = json.dumps({"HostPort": f"127.0.0.1:{echo_port}", "Timeout": 2_000_000_000}).encode()
    assert await conn.request("check_port", hp) == (True, b'{"Open":true,"ErrMsg":""}')
    closed = _free_port()
    req = json.dumps({"HostPort": f"127.0.0.1:{closed}"}).encode()
    ok, out = await conn.request("check_port", req)
    assert ok and json.loads(out) == {
        "Open": False,
        "ErrMsg": f"dial tcp 127.0.0.1:{closed}: connect: connection refused",
    }
    ok, out = await conn.request("check_port", b'{"Timeout":"x"}')
    assert not ok and out.startswith(b"failed to decode *comm.CheckPortRequest: json: cannot")

    ok, out = await conn.request("check_tunnel_allowed", b'{"Remote":"127.0.0.1:1"}')
    assert (ok, out) == (True, b'{"IsAllowed":false}')
    req = json.dumps({"Remote": f"127.0.0.1:{echo_port}"}).encode()
    ok, out = await conn.request("check_tunnel_allowed", req)
    assert (ok, out) == (True, b'{"IsAllowed":true}')
    ok, out = await conn.request("check_tunnel_allowed", b'{"Remote":"127.0.0.1"}')
    assert (ok, out) == (False, b"address 127.0.0.1: missing port in address")

    # tunnel_allowed refusal of a channel
    with pytest.raises(asyncssh.ChannelOpenError) as ei:
        await conn.open_rport("127.0.0.1:1")
    assert ei.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert ei.value.reason == 'not allowed with "tunnel_allowed" config'

    # refresh_updates_status -> null, then updates_status
    assert await conn.request("refresh_updates_status", b"null") == (True, b"null")
    for _ in range(100):
        if any(b'"updates_available"' in r for r in server.other_requests):
            break
        await asyncio.sleep(0.02)
    assert any(b'"updates_available"' in r for r in server.other_requests)

    # update_client_metadata
    ok, out = await conn.request("update_client_metadata", b'{"tags":["x"],"labels":{"k":"v"}}')
    assert (ok, out) == (True, b'{"status":"OK"}')
    assert sim.tags == ["x"] and sim.labels == {"k": "v"}

    # run_cmd refusals (exact texts of §7.2)
    sim.config.commands_allow = ["^/usr/bin/.*"]
    ok, out = await conn.request("run_cmd", b'{"jid":"1","command":"ls","timeout_sec":5}')
    assert (ok, out) == (False, b"command is not allowed: ls")
    ok, out = await conn.request("run_cmd", b'{"jid":"1","command":"x","is_script":true}')
    assert (ok, out) == (False, b"remote scripts are disabled")
    ok, out = await conn.request("run_cmd", b'{"jid":"1","timeout_sec":1.5}')
    assert not ok and out.startswith(b"failed to decode requested job: json: cannot unmarshal")
    sim.config.remote_commands_enabled = False
    ok, out = await conn.request("run_cmd", b"{}")
    assert (ok, out) == (False, b"remote commands execution is disabled")

    # client ping
    assert await sim.send_ping() == b""
    assert server.pings == 1


async def test_streamed_command_and_failure_status(
    server: MiniServer, sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(sim_config(server, tmp_path))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)
    cmd = "echo out; echo '<summary>sum</summary>'; echo err >&2; exit 3"
    job = {"jid": "s1", "command": cmd, "timeout_sec": 10, "stream_result": True}
    payload = json.dumps(job).encode()
    ok, reply = await conn.request("run_cmd", payload)
    assert ok, reply
    res = await asyncio.wait_for(server.cmd_results.get(), 10)
    assert res["status"] == "failed" and res["error"] == "exit status 3"
    assert res["result"] == {
        "stdout": "out\n<summary>sum</summary>\n", "stderr": "err\n", "summary": "sum"
    }  # fmt: skip
    assert [e for e, _ in server.stream_channels] == [payload, payload]
    (_, out_s), (_, err_s) = server.stream_channels
    await asyncio.wait_for(out_s.closed.wait(), 5)
    await asyncio.wait_for(err_s.closed.wait(), 5)
    assert out_s.data == b"out\n<summary>sum</summary>\n" and err_s.data == b"err\n"

    # timeout -> status unknown
    ok, _ = await conn.request("run_cmd", b'{"jid":"t1","command":"sleep 5","timeout_sec":1}')
    assert ok
    t0 = time.monotonic()
    res = await asyncio.wait_for(server.cmd_results.get(), 10)
    assert res["status"] == "unknown" and time.monotonic() - t0 < 3


async def test_udp_tunnel(server: MiniServer, sim_factory: Any, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.t.sendto(b"re:" + data, addr)

    udp_t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    try:
        udp_port = udp_t.get_extra_info("sockname")[1]
        sim = sim_factory(sim_config(server, tmp_path))
        await sim.start()
        await sim.wait_registered(10)
        conn = await asyncio.wait_for(server.registered.get(), 5)
        chan, sess = await conn.open_rport(f"127.0.0.1:{udp_port}/udp")
        enc, dec = GobEncoder(), GobDecoder()
        a1 = UDPAddr(bytes.fromhex("00000000000000000000ffffc0a8000a"), 40000)
        a2 = UDPAddr(bytes([10, 9, 8, 7]), 5353)
        chan.write(enc.encode(UDPMessage(a1, b"one")) + enc.encode(UDPMessage(a2, b"two")))
        got: list[UDPMessage] = []
        while len(got) < 2:
            sess.got.clear()
            got += dec.feed_messages(sess.data)
            sess.data = b""
            if len(got) < 2:
                await asyncio.wait_for(sess.got.wait(), 5)
        assert {(m.addr, m.data) for m in got} == {(a1, b"re:one"), (a2, b"re:two")}
        # the first bytes the client sent are exactly Go's type definitions
        chan.close()
    finally:
        udp_t.close()


async def test_upload_via_sftp(server: MiniServer, sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(sim_config(server, tmp_path))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)
    src = tmp_path / "push_src"
    src.write_bytes(b"hello upload")
    dest = tmp_path / "out" / "hello.txt"
    md5 = base64.b64encode(hashlib.md5(b"hello upload").digest()).decode()
    req = {
        "ID": "u1", "SourceFilePath": str(src), "DestinationPath": str(dest),
        "DestinationFileMode": 0o644, "DestinationFileOwner": "", "DestinationFileGroup": "",
        "ForceWrite": False, "Sync": False, "Md5Checksum": md5,
    }  # fmt: skip
    ok, out = await conn.request("upload", json.dumps(req).encode(), timeout=20)
    assert ok, out
    assert json.loads(out) == {
        "uuid": "u1", "filepath": str(dest), "size": 12,
        "message": f"file successfully copied to destination {dest}", "status": "success",
    }  # fmt: skip
    assert dest.read_bytes() == b"hello upload"
    ok, out = await conn.request("upload", json.dumps(req).encode(), timeout=20)
    assert ok and json.loads(out)["status"] == "ignored"
    req["ForceWrite"] = True
    req["Md5Checksum"] = base64.b64encode(b"\x00" * 16).decode()
    ok, out = await conn.request("upload", json.dumps(req).encode(), timeout=20)
    assert not ok and out.startswith(b"md5 check failed: checksum from server 0000")
    sim.config.file_reception_enabled = False
    ok, out = await conn.request("upload", json.dumps(req).encode())
    assert (ok, out) == (
        False,
        b"uploads are disabled on this client, check [file-reception] enabled option",
    )


async def test_refusals(server: MiniServer, sim_factory: Any, tmp_path: Path) -> None:
    # wrong password
    bad = sim_factory(sim_config(server, tmp_path, auth="client1:wrong"))
    r = await bad.connect_once()
    assert not r.ok and r.stage == "auth" and "unable to authenticate" in r.error
    # wrong fingerprint
    fp = sim_factory(sim_config(server, tmp_path, fingerprint="00:11"))
    r = await fp.connect_once()
    assert not r.ok and r.stage == "fingerprint"
    assert r.error.endswith(f"invalid fingerprint ({SEED_FP})")
    # non-rport endpoint
    nope = sim_factory(sim_config(server, tmp_path, server=f"http://127.0.0.1:{_free_port()}"))
    r = await nope.connect_once()
    assert not r.ok and r.stage == "websocket"
    # rejected new_connection, "already connected" -> client closes
    server.reject_with = "client is already connected: x [sim-1]"
    s = sim_factory(sim_config(server, tmp_path, max_retry_count=1))
    await s.start()
    await s.wait_state("finished", 10)
    assert s.last_new_connection_error == "client is already connected: x [sim-1]"
    assert s.has_event("new_connection rejected: client is already connected")
    assert s.has_event("max retries exceeded")
    # other rejection: the connection is left open by the client
    server.reject_with = "unable to start tunnel: boom"
    s2 = sim_factory(sim_config(server, tmp_path, max_retry_count=0))
    r = await s2.connect_once()
    assert not r.ok and r.stage == "new_connection" and r.error == "unable to start tunnel: boom"
    await s2.start()
    await s2.wait_state("finished", 10)
    assert s2._orphans  # still open, like the Go client


async def test_raw_websocket(server: MiniServer) -> None:
    raw = await open_raw(server.url)
    try:
        line = await raw.read_until(b"\r\n", 5)
        assert line == b"SSH-rport-v1-server\r\n"
        await raw.send(b"garbage that is not ssh\r\n" * 100, fragment_size=1024)
        await raw.wait_closed(10)
    finally:
        await raw.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as ei:
        await open_raw(server.url, protocols=("rport-v2",))
    assert ei.value.status == 404


async def test_fallback_and_switchback(sim_factory: Any, tmp_path: Path) -> None:
    main_port = _free_port()
    fb = MiniServer()
    await fb.start()
    main = MiniServer(port=main_port)
    try:
        cfg = sim_config(
            fb, tmp_path, server=f"127.0.0.1:{main_port}", fallback_servers=[fb.url],
            server_switchback_interval=0.3,
        )  # fmt: skip
        sim = sim_factory(cfg)
        await sim.start()
        await sim.wait_registered(10)
        assert sim.current_server_url == fb.url
        fb_conn = await asyncio.wait_for(fb.registered.get(), 5)
        await main.start()
        await sim.wait_event("switched back to main server", 10)
        await asyncio.wait_for(main.registered.get(), 10)
        await sim.wait_registered(10)
        assert sim.current_server_url == f"ws://127.0.0.1:{main_port}"
        assert fb_conn.is_closed() or await _closed_soon(fb_conn)
        assert sim.has_event("Connected to main server, switching back.")
        # main server goes away -> fallback again after backoff
        await main.stop()
        await sim.wait_event(f"Disconnected from ws://127.0.0.1:{main_port}", 10)
        await asyncio.wait_for(fb.registered.get(), 10)
    finally:
        await sim.stop()
        await main.stop()
        await fb.stop()


async def _closed_soon(conn: MiniConn) -> bool:
    for _ in range(100):
        if conn.is_closed():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_keepalive_and_ip_addresses(server: MiniServer, sim_factory: Any, tmp_path: Path):
    cfg = sim_config(
        server, tmp_path, keep_alive=0.2, keep_alive_jitter=0.0,
        ip_addresses=("203.0.113.7", "2001:db8::7"), send_updates_status=True,
    )  # fmt: skip
    sim = sim_factory(cfg)
    await sim.start()
    await sim.wait_registered(10)
    for _ in range(100):
        if server.pings >= 2 and any(b'"ipv4"' in r for r in server.other_requests):
            break
        await asyncio.sleep(0.05)
    assert server.pings >= 2
    ip = next(json.loads(r) for r in server.other_requests if b'"ipv4"' in r)
    assert ip == {
        "ipv4": "203.0.113.7", "ipv6": "2001:db8::7",
        "updated_at": "0001-01-01T00:00:00Z", "error": "",
    }  # fmt: skip
    assert any(b'"updates_available"' in r for r in server.other_requests)


async def test_reconnect_after_server_close_keeps_session(
    server: MiniServer, sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(sim_config(server, tmp_path))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)
    conn.abort()
    await sim.wait_disconnected(5)
    await asyncio.wait_for(server.registered.get(), 10)
    await sim.wait_registered(10)
    assert len(server.new_connections) == 2
    assert server.new_connections[0]["SessionID"] == server.new_connections[1]["SessionID"]
    assert sim.has_event("Retrying in")


async def test_new_connection_timeouts_crash_like_go(
    server: MiniServer, sim_factory: Any, tmp_path: Path
) -> None:
    server.hold_new_connection = True
    cfg = sim_config(server, tmp_path, new_connection_timeout=0.2, request_retry_wait=0.01)
    cfg.request_retry_jitter = 0.01
    sim = sim_factory(cfg)
    await sim.start()
    await sim.wait_state("crashed", 10)
    # Go's mux holds the request lock until a reply arrives: the retries are never sent
    assert len(server.new_connections) == 1
    assert sim.has_event("panic: invalid argument to Intn")
    assert sim.has_event("conn.SendRequest(new_connection), timeout 200ms exceeded")


async def test_keepalive_failure_reconnects_without_backoff(
    server: MiniServer, sim_factory: Any, tmp_path: Path
) -> None:
    server.ping_ok = False
    cfg = sim_config(server, tmp_path, keep_alive=0.1, keep_alive_jitter=0.0, backoff_min=30)
    sim = sim_factory(cfg)
    await sim.start()
    await sim.wait_registered(10)
    await asyncio.wait_for(server.registered.get(), 5)
    await sim.wait_event("Failed to send keepalive", 10)
    await asyncio.wait_for(server.registered.get(), 5)  # back quickly: no 30 s backoff
    assert not sim.has_event("Retrying in")


async def test_cli_runs_many_clients(server: MiniServer, capsys: Any) -> None:
    from tests.simulator.__main__ import _main, _parse

    args = _parse(
        [
            "--server", f"127.0.0.1:{server.port}", "--auth", "client1:secret", "--count", "20",
            "--id-prefix", "cli-", "--jitter", "0", "--duration", "2", "--report", "0.5",
            "--keep-alive", "0",
        ]
    )  # fmt: skip
    assert await _main(args) == 0
    out = capsys.readouterr().out
    assert "registered=20/20" in out
    ids = {c["ID"] for c in server.new_connections}
    assert ids == {f"cli-{n}" for n in range(1, 21)}


async def test_stop_during_stalled_handshake(sim_factory: Any, tmp_path: Path) -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(65536)
        await asyncio.sleep(30)

    srv = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        sim = sim_factory(SimulatorConfig(server=f"127.0.0.1:{port}", data_dir=str(tmp_path)))
        await sim.start()
        await asyncio.sleep(0.2)
        assert sim.state == "connecting"
        t0 = time.monotonic()
        await sim.stop()
        assert time.monotonic() - t0 < 5 and sim.state == "stopped"
    finally:
        srv.close()


async def test_double_ping_reply(server: MiniServer, sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(sim_config(server, tmp_path, double_ping_reply=True, version="0.9.0"))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)
    assert await conn.request("ping", b"") == (True, b"")
    for _ in range(50):
        if server.stray_replies:
            break
        await asyncio.sleep(0.02)
    assert server.stray_replies == [(MSG_REQUEST_SUCCESS, b"null")]


async def test_cmd_result_arrives_on_a_later_connection(
    server: MiniServer, sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(sim_config(server, tmp_path))
    await sim.start()
    await sim.wait_registered(10)
    conn = await asyncio.wait_for(server.registered.get(), 5)
    ok, _ = await conn.request(
        "run_cmd", b'{"jid":"late","command":"sleep 0.7; echo done","timeout_sec":10}'
    )
    assert ok
    conn.abort()
    conn2 = await asyncio.wait_for(server.registered.get(), 10)
    assert conn2 is not conn
    res = await asyncio.wait_for(server.cmd_results.get(), 10)
    assert res["jid"] == "late" and res["result"]["stdout"] == "done\n"


async def test_bad_handshake_then_head_probe(sim_factory: Any, tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    async def locked(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("User-Agent", "")))
        return web.Response(status=423, text="Too many bad attempts. Please try later.")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", locked)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        sim = sim_factory(sim_config(MiniServer(port=runner_port(runner)), tmp_path))
        r = await sim.connect_once()
        assert (r.ok, r.stage, r.status) == (False, "websocket", 423)
        assert r.error.startswith("websocket: bad handshake - Server maybe busy.")
        assert seen == [("GET", "rport 0.9.14"), ("HEAD", "Go-http-client/1.1")]
    finally:
        await runner.cleanup()


def test_frame_builder_is_masked() -> None:
    from tests.simulator.transport import OP_BINARY, build_frame

    f = build_frame(b"abc", OP_BINARY)
    assert f[0] == 0x82 and f[1] == 0x83
    key = f[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(f[6:])) == b"abc"
    assert struct.unpack("!H", build_frame(b"x" * 300, OP_BINARY)[2:4])[0] == 300
