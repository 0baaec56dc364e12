"""What the checker asks a server about its real client, and how two servers' answers compare.

Every check drives the REST API of one server (ours or upstream's) with the real client connected,
asserts what the client must have done (bytes through a tunnel, a file written, a command's
output), and records the answers it got as observations. Observations of the same check on two
servers are compared by status code, shape (keys and JSON types, recursively) and error texts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .procs import Client, Server, admin_auth


class CheckFailed(Exception):
    """A check saw the real client or the server do something wrong."""


@dataclass
class Observation:
    """One API answer a check got."""

    label: str
    status: int
    body: Any
    check: str = ""  # the check that made it


@dataclass
class Context:
    """One server, its real client and the helpers the checks use."""

    server: Server
    client: Client
    http: aiohttp.ClientSession
    tcp_echo_port: int
    udp_echo_port: int
    workdir: Path
    observations: list[Observation] = field(default_factory=list)

    @property
    def client_id(self) -> str:
        return str(self.client.config()["client"]["id"])

    async def call(
        self, label: str, method: str, path: str, record: bool = True, **kwargs: Any
    ) -> tuple[int, Any]:
        """One API request with the admin's basic auth; the answer is recorded under `label`."""
        kwargs.setdefault("headers", admin_auth())
        async with self.http.request(method, self.server.api_url + path, **kwargs) as resp:
            text = await resp.text()
            try:
                body: Any = json.loads(text) if text else None
            except ValueError:
                body = text
            if record:
                self.observations.append(Observation(label, resp.status, body))
            return resp.status, body


Check = Callable[[Context], Awaitable[None]]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


async def poll(
    what: str, probe: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.5
) -> Any:
    """Call `probe` until it returns something truthy; CheckFailed after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise CheckFailed(f"{what}: not within {timeout:.0f}s (last: {last!r:.300})")


async def wait_connected(ctx: Context, timeout: float = 40.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, body = await ctx.call("", "GET", f"/clients/{ctx.client_id}", record=False)
        if status == 200 and body["data"].get("connection_state") == "connected":
            return dict(body["data"])
        return None

    client: dict[str, Any] = await poll("the real client connected", probe, timeout)
    return client


# ---------------------------------------------------------------------------------- the checks


async def check_status(ctx: Context) -> None:
    status, body = await ctx.call("GET /status", "GET", "/status")
    expect(status == 200, f"/status answered {status}")
    expect(body["data"]["clients_connected"] >= 1, "no connected client in /status")


async def check_clients(ctx: Context) -> None:
    client = await wait_connected(ctx)
    status, body = await ctx.call("GET /clients", "GET", "/clients")
    expect(status == 200 and any(c["id"] == ctx.client_id for c in body["data"]), "not listed")
    fields = "id,name,os,os_kernel,ipv4,tags,labels,connection_state,client_configuration"
    await ctx.call("GET /clients?fields", "GET", f"/clients?fields[clients]={fields}")
    await ctx.call("GET /clients/{id}", "GET", f"/clients/{ctx.client_id}")
    expect(client["name"] == "real client", f"name {client['name']!r}")
    expect(sorted(client["tags"]) == ["check", "realclient"], f"tags {client['tags']!r}")
    expect(client["labels"] == {"city": "Berlin", "role": "check"}, f"labels {client['labels']}")
    expect(bool(client["os_kernel"]) and bool(client["hostname"]), "no os_kernel/hostname")
    expect(isinstance(client.get("client_configuration"), dict), "no client_configuration")
    await ctx.call("GET /clients/{unknown}", "GET", "/clients/no-such-client")


async def run_job(ctx: Context, label: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    status, body = await ctx.call(f"POST {label}", "POST", path, json=payload)
    expect(status == 200, f"{label} answered {status}: {body}")
    jid = body["data"]["jid"]

    async def probe() -> dict[str, Any] | None:
        status, body = await ctx.call("", "GET", f"/clients/{ctx.client_id}/commands/{jid}", False)
        if status == 200 and body["data"]["status"] not in ("running", ""):
            return dict(body["data"])
        return None

    job: dict[str, Any] = await poll(f"{label} finished", probe, 40)
    await ctx.call(f"GET {label}/{{jid}}", "GET", f"/clients/{ctx.client_id}/commands/{jid}")
    return job


async def check_command(ctx: Context) -> None:
    job = await run_job(
        ctx,
        "/clients/{id}/commands",
        f"/clients/{ctx.client_id}/commands",
        {"command": "echo hello-real-client", "timeout_sec": 30},
    )
    expect(job["status"] == "successful", f"job {job['status']}: {job.get('error')}")
    expect(job["result"]["stdout"] == "hello-real-client\n", f"stdout {job['result']!r}")
    await ctx.call("GET /clients/{id}/commands", "GET", f"/clients/{ctx.client_id}/commands")
    await ctx.call(
        "POST /clients/{id}/commands (empty)",
        "POST",
        f"/clients/{ctx.client_id}/commands",
        json={"command": ""},
    )


async def check_failing_command(ctx: Context) -> None:
    job = await run_job(
        ctx,
        "/clients/{id}/commands (exit 2)",
        f"/clients/{ctx.client_id}/commands",
        {"command": "ls /rc-no-such-path", "timeout_sec": 30},
    )
    expect(job["status"] == "failed", f"job {job['status']}")
    expect("No such file" in job["result"]["stderr"], f"stderr {job['result']!r}")
    await ctx.call(
        "POST /clients/{id}/commands (denied)",
        "POST",
        f"/clients/{ctx.client_id}/commands",
        json={"command": "echo a; echo b", "timeout_sec": 30},
    )


async def check_script(ctx: Context) -> None:
    script = base64.b64encode(b"#!/bin/sh\necho script-$((6*7))\n").decode()
    job = await run_job(
        ctx,
        "/clients/{id}/scripts",
        f"/clients/{ctx.client_id}/scripts",
        {"script": script, "timeout_sec": 30},
    )
    expect(job["status"] == "successful", f"script {job['status']}: {job.get('error')}")
    expect(job["result"]["stdout"] == "script-42\n", f"stdout {job['result']!r}")


async def check_job_options(ctx: Context) -> None:
    """cwd, interpreter and a command that outlives its timeout."""
    base = f"/clients/{ctx.client_id}/commands"
    job = await run_job(
        ctx,
        "/clients/{id}/commands (cwd)",
        base,
        {"command": "pwd", "cwd": "/tmp", "timeout_sec": 30},
    )
    expect(job["result"]["stdout"] == "/tmp\n", f"cwd: {job['result']!r}")
    job = await run_job(
        ctx, "/clients/{id}/commands (timeout)", base, {"command": "sleep 5", "timeout_sec": 1}
    )
    expect(job["status"] != "successful", f"a timed-out command is {job['status']}")
    await ctx.call(
        "POST /clients/{id}/commands (bad interpreter)",
        "POST",
        base,
        json={"command": "true", "interpreter": "no-such-shell"},
    )
    await ctx.call("DELETE /clients/{id} (connected)", "DELETE", f"/clients/{ctx.client_id}")


async def check_ws_scripts(ctx: Context) -> None:
    _, body = await ctx.call("GET /login", "GET", "/login", record=False)
    url = ctx.server.api_url.replace("http://", "ws://")
    url += f"/ws/scripts?access_token={body['data']['token']}"
    script = base64.b64encode(b"echo ws-script\n").decode()
    messages: list[Any] = []
    async with ctx.http.ws_connect(url) as ws:
        await ws.send_str(
            json.dumps({"script": script, "client_ids": [ctx.client_id], "timeout_sec": 30})
        )
        async with asyncio.timeout(40):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    messages.append(json.loads(msg.data))
    ctx.observations.extend(Observation("/ws/scripts message", 101, m) for m in messages)
    finals = [m for m in messages if "status" in m]
    expect(len(finals) == 1 and finals[0]["status"] == "successful", f"{messages!r:.500}")


async def check_multi_job(ctx: Context) -> None:
    payload = {"command": "echo multi", "client_ids": [ctx.client_id], "timeout_sec": 30}
    status, body = await ctx.call("POST /commands", "POST", "/commands", json=payload)
    expect(status == 200, f"POST /commands answered {status}: {body}")
    jid = body["data"]["jid"]

    async def probe() -> dict[str, Any] | None:
        status, body = await ctx.call("", "GET", f"/commands/{jid}", record=False)
        jobs = body["data"].get("jobs") or [] if status == 200 else []
        if jobs and all(j["status"] not in ("running", "") for j in jobs):
            return dict(body["data"])
        return None

    multi = await poll("multi-client job finished", probe, 40)
    await ctx.call("GET /commands/{jid}", "GET", f"/commands/{jid}")
    await ctx.call("GET /commands", "GET", "/commands")
    job = multi["jobs"][0]
    expect(job["status"] == "successful", f"child job {job['status']}")
    expect(job["result"]["stdout"] == "multi\n", f"stdout {job['result']!r}")


async def check_ws_commands(ctx: Context) -> None:
    status, body = await ctx.call("GET /login", "GET", "/login", record=False)
    expect(status == 200, f"login {status}")
    token = body["data"]["token"]
    url = ctx.server.api_url.replace("http://", "ws://") + f"/ws/commands?access_token={token}"
    messages: list[Any] = []
    async with ctx.http.ws_connect(url) as ws:
        await ws.send_str(
            json.dumps({"command": "echo ws-out", "client_ids": [ctx.client_id], "timeout_sec": 30})
        )
        async with asyncio.timeout(40):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    messages.append(json.loads(msg.data))
    ctx.observations.extend(Observation("/ws/commands message", 101, m) for m in messages)
    finals = [m for m in messages if "status" in m]
    expect(len(finals) == 1, f"/ws/commands sent {messages!r:.500}")
    expect(finals[0]["status"] == "successful", f"ws job {finals[0]['status']}")
    expect(finals[0]["result"]["stdout"] == "ws-out\n", f"ws stdout {finals[0]['result']!r}")


async def tcp_echo_through(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _open_tunnel(ctx: Context, label: str, query: str) -> dict[str, Any]:
    path = f"/clients/{ctx.client_id}/tunnels?{query}"
    status, body = await ctx.call(f"PUT tunnels {label}", "PUT", path)
    expect(status == 200, f"tunnel {label} answered {status}: {body}")
    return dict(body["data"])


async def _close_tunnel(ctx: Context, label: str, tunnel: dict[str, Any]) -> None:
    path = f"/clients/{ctx.client_id}/tunnels/{tunnel['id']}"
    status, _ = await ctx.call(f"DELETE tunnel {label}", "DELETE", path)
    expect(status == 204, f"closing tunnel {label} answered {status}")


async def check_tcp_tunnels(ctx: Context) -> None:
    remote = f"127.0.0.1:{ctx.tcp_echo_port}"
    variants = {
        "plain": f"remote={remote}",
        "acl": f"remote={remote}&acl=127.0.0.1",
        "idle-timeout": f"remote={remote}&idle-timeout-minutes=5",
        "auto-close": f"remote={remote}&auto-close=1m",
    }
    for label, query in variants.items():
        tunnel = await _open_tunnel(ctx, label, query)
        payload = f"through the {label} tunnel".encode() * 100
        echoed = await tcp_echo_through(int(tunnel["lport"]), payload)
        expect(echoed == payload, f"{label}: bytes came back changed")
        await ctx.call("GET /clients/{id} with tunnel", "GET", f"/clients/{ctx.client_id}")
        await asyncio.sleep(0.5)  # both servers refuse to close a tunnel with a connection open
        await _close_tunnel(ctx, label, tunnel)
    blocked = await _open_tunnel(ctx, "acl other", f"remote={remote}&acl=10.9.9.9")
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
        echoed = await tcp_echo_through(int(blocked["lport"]), b"x")
        expect(False, "a connection from outside the ACL went through")
    await _close_tunnel(ctx, "acl other", blocked)
    first = await _open_tunnel(ctx, "first", f"remote={remote}")
    await ctx.call(
        "PUT tunnels same remote", "PUT", f"/clients/{ctx.client_id}/tunnels?{variants['plain']}"
    )
    await ctx.call(
        "PUT tunnels not allowed by client",
        "PUT",
        f"/clients/{ctx.client_id}/tunnels?remote=192.0.2.77:80",
    )
    await _close_tunnel(ctx, "first", first)
    await ctx.call(
        "PUT tunnels local port not in used_ports",
        "PUT",
        f"/clients/{ctx.client_id}/tunnels?remote={remote}&local=42999",
    )
    await ctx.call(
        "PUT tunnels remote port closed",
        "PUT",
        f"/clients/{ctx.client_id}/tunnels?remote=127.0.0.1:9",
    )
    await ctx.call("PUT tunnels bad remote", "PUT", f"/clients/{ctx.client_id}/tunnels?remote=x:y")
    await ctx.call("PUT tunnels no client", "PUT", f"/clients/nope/tunnels?remote={remote}")


async def check_udp_tunnel(ctx: Context) -> None:
    tunnel = await _open_tunnel(ctx, "udp", f"remote=127.0.0.1:{ctx.udp_echo_port}&protocol=udp")
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", int(tunnel["lport"])))
        got = b""
        for _ in range(10):  # the first datagram may race the client's UDP socket
            await loop.sock_sendall(sock, b"udp-datagram")
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(loop.sock_recv(sock, 2048), 1)
                break
        expect(got == b"udp-datagram", f"udp echo got {got!r}")
    finally:
        sock.close()
    await _close_tunnel(ctx, "udp", tunnel)


async def check_attributes_without_file(ctx: Context) -> None:
    body = {"tags": ["a"], "labels": {"k": "v"}}
    status, _ = await ctx.call(
        "PUT attributes (no file)", "PUT", f"/clients/{ctx.client_id}/attributes", json=body
    )
    expect(status == 409, f"PUT attributes without attributes_file_path answered {status}")
    await ctx.call("GET attributes", "GET", f"/clients/{ctx.client_id}/attributes")


async def check_updates_status(ctx: Context) -> None:
    status, _ = await ctx.call(
        "POST updates-status", "POST", f"/clients/{ctx.client_id}/updates-status"
    )
    expect(status == 204, f"updates-status answered {status}")


async def check_file_upload(ctx: Context) -> None:
    dest = ctx.workdir / "received" / "pushed.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    content = b"pushed by the file-upload check\n" * 50
    form = aiohttp.FormData()
    form.add_field("client_id", ctx.client_id)
    form.add_field("dest", str(dest))
    form.add_field("mode", "0640")
    form.add_field("force", "true")
    form.add_field("upload", content, filename="pushed.txt")
    status, body = await ctx.call("GET /login", "GET", "/login", record=False)
    url = ctx.server.api_url.replace("http://", "ws://")
    url += f"/ws/uploads?access_token={body['data']['token']}"
    async with ctx.http.ws_connect(url) as ws:
        status, body = await ctx.call("POST /files", "POST", "/files", data=form)
        expect(status == 200, f"POST /files answered {status}: {body}")
        with contextlib.suppress(TimeoutError):
            msg = await ws.receive_json(timeout=30)
            ctx.observations.append(Observation("/ws/uploads message", 101, msg))

    async def arrived() -> bool:
        return dest.exists() and dest.read_bytes() == content

    await poll("pushed file written by the client", arrived, 30)
    expect(dest.stat().st_mode & 0o777 == 0o640, f"mode {oct(dest.stat().st_mode)}")


async def check_metrics(ctx: Context) -> None:
    async def probe() -> bool:
        status, body = await ctx.call("", "GET", f"/clients/{ctx.client_id}/metrics", False)
        return status == 200 and bool(body.get("data"))

    await poll("first measurement from the client", probe, 90, interval=3)
    for what in ("metrics", "processes", "mountpoints"):
        await ctx.call(f"GET /clients/{{id}}/{what}", "GET", f"/clients/{ctx.client_id}/{what}")
    await ctx.call(
        "GET graph-metrics",
        "GET",
        f"/clients/{ctx.client_id}/graph-metrics?filter[timestamp][gt]=2000-01-01T00:00:00Z",
    )


CHECKS: dict[str, Check] = {
    "status": check_status,
    "clients": check_clients,
    "command": check_command,
    "failing command": check_failing_command,
    "script": check_script,
    "job options": check_job_options,
    "multi-client job": check_multi_job,
    "ws/scripts": check_ws_scripts,
    "ws/commands": check_ws_commands,
    "tcp tunnels": check_tcp_tunnels,
    "udp tunnel": check_udp_tunnel,
    "attributes without file": check_attributes_without_file,
    "updates-status": check_updates_status,
    "file upload": check_file_upload,
    "metrics": check_metrics,
}


# ----------------------------------------------------------------------------- the comparison

#: Values that legitimately differ between two servers (ids, times, ports, versions).
_VOLATILE = {"jid", "multi_job_id", "started_at", "finished_at", "created_at", "timestamp"}


def shape(value: Any) -> Any:
    """The JSON type structure of `value`: dict keys with their shapes, a list's element shapes."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            if shape(item) not in shapes:
                shapes.append(shape(item))
        return shapes
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "string"


_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _merged(items: list[Any]) -> Any:
    """One element standing for a list: dicts merged (omitempty fields appear where set)."""
    if not all(isinstance(item, dict) for item in items):
        return items[0]
    merged: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if merged.get(key) is None:
                merged[key] = value
    return merged


def _differences(path: str, ours: Any, theirs: Any) -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = [f"{path}.{k}: only upstream has it" for k in theirs if k not in ours]
        out += [f"{path}.{k}: only ours has it" for k in ours if k not in theirs]
        for key in ours.keys() & theirs.keys():
            out += _differences(f"{path}.{key}", ours[key], theirs[key])
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        if ours and theirs:
            return _differences(f"{path}[]", _merged(ours), _merged(theirs))
        return []
    if type(ours) is not type(theirs) and not (
        isinstance(ours, int | float) and isinstance(theirs, int | float)
    ):
        if ours is None or theirs is None:
            return [f"{path}: ours {ours!r:.60} upstream {theirs!r:.60}"]
        return [f"{path}: ours {type(ours).__name__} upstream {type(theirs).__name__}"]
    if isinstance(ours, str) and bool(_TIME.match(ours)) != bool(_TIME.match(theirs)):
        return [f"{path}: time format ours {ours!r:.40} upstream {theirs!r:.40}"]
    return []


def _error_texts(body: Any) -> list[str]:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [
            f"{e.get('code', '')}|{e.get('title', '')}|{e.get('detail', '')}"
            for e in body["errors"]
            if isinstance(e, dict)
        ]
    return []


#: Differences found and kept on purpose, by the field's path: why.
KNOWN = {
    "ERR_CODE_REMOTE_PORT_NOT_OPEN": "upstream's handler sets this code but its answer carries "
    'code ""; api.md 5.5 names the code, and ours sends it',
    ".data[].processes[].cpu_avg_usage_percent": "the client's own JSON, where it omits a zero "
    "(all zero in its first measurement)",
    ".data.last_heartbeat_at": "ours counts the registration as the first sign of life; upstream "
    "shows null until the client's first keep-alive ping",
}


def compare(ours: list[Observation], upstream: list[Observation]) -> list[str]:
    """Differences in status, shape and error texts between the same check's observations."""
    out: list[str] = []
    theirs_by_label: dict[str, list[Observation]] = {}
    for obs in upstream:
        theirs_by_label.setdefault(obs.label, []).append(obs)
    seen: set[str] = set()
    for obs in ours:
        if obs.label in seen:
            continue
        seen.add(obs.label)
        mine = [o for o in ours if o.label == obs.label]
        theirs = theirs_by_label.get(obs.label, [])
        if obs.label.startswith("/ws/") and mine and theirs:
            # partial output messages depend on timing (a short command's output may arrive
            # with its result): the final messages are compared
            mine, theirs = mine[-1:], theirs[-1:]
        if not theirs:
            out.append(f"{obs.label}: upstream gave no such answer")
            continue
        if [o.status for o in mine] != [o.status for o in theirs]:
            out.append(
                f"{obs.label}: status ours {[o.status for o in mine]} "
                f"upstream {[o.status for o in theirs]}"
            )
            continue
        for a, b in zip(mine, theirs, strict=False):
            out += [
                f"{obs.label}: {d}"
                for d in _differences("", a.body, b.body)
                if d.split(":")[0] not in KNOWN
            ]
            if a.status == 0 and a.body != b.body:  # what a client did: compared by value
                out.append(f"{obs.label}: ours {a.body} upstream {b.body}")
            elif _error_texts(a.body) != _error_texts(b.body) and not any(
                known in text for known in KNOWN for text in _error_texts(a.body)
            ):
                out.append(
                    f"{obs.label}: errors ours {_error_texts(a.body)} "
                    f"upstream {_error_texts(b.body)}"
                )
    out += [f"{label}: only upstream answered" for label in theirs_by_label if label not in seen]
    return out
