"""Tunnel throughput: MB/s through a TCP tunnel, beside the same transfer over plain loopback.

rportd and the client (the simulator, or the real ``rport`` binary with
``--rport PATH``) run as their own processes on 127.0.0.1; this process runs
the local sink/source and the application side of the transfer.

    python -m bench.tunnel_throughput [--seconds 3] [--streams 1,4] [--rport /path/to/rport]

``up`` is application -> tunnel listener -> client -> sink; ``down`` is
source -> client -> tunnel listener -> application.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import ADMIN, CLIENT_AUTH, REPO, cpu_seconds, free_port, write_config

CHUNK = b"\xa5" * (256 * 1024)
CLIENT_ID = "bench-1"


def rportd_pid(pid: int, wrapped: bool) -> int:
    """The rportd process: ``pid`` itself, or its child when started through a wrapper."""
    if not wrapped:
        return pid
    for _ in range(50):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    return pid


class Endpoint:
    """Local sink (counts what it receives) and source (sends until told to stop)."""

    def __init__(self) -> None:
        self.received = 0
        self.sending = False
        self.done: asyncio.Queue[None] = asyncio.Queue()

    async def sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 20):
                self.received += len(data)
        except ConnectionError:
            pass
        writer.close()
        self.done.put_nowait(None)

    async def source(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.sending:
                writer.write(CHUNK)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()


async def upload(port: int, streams: int, seconds: float, sink: Endpoint) -> float:
    """Send for ``seconds`` on ``streams`` connections; MB/s the sink received."""
    sink.received = 0
    writers = [(await asyncio.open_connection("127.0.0.1", port))[1] for _ in range(streams)]
    started = time.monotonic()

    async def send(writer: asyncio.StreamWriter) -> None:
        while time.monotonic() - started < seconds:
            writer.write(CHUNK)
            await writer.drain()
        writer.close()

    await asyncio.gather(*(send(w) for w in writers))
    for _ in range(streams):
        await asyncio.wait_for(sink.done.get(), 60)
    return sink.received / (time.monotonic() - started) / 1e6


async def download(port: int, streams: int, seconds: float, source: Endpoint) -> float:
    """Read for ``seconds`` on ``streams`` connections fed by the source; MB/s read."""
    source.sending = True
    total = 0

    async def receive(reader: asyncio.StreamReader) -> None:
        nonlocal total
        while time.monotonic() - started < seconds:
            data = await reader.read(1 << 20)
            if not data:
                break
            total += len(data)

    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(streams)]
    started = time.monotonic()
    await asyncio.gather(*(receive(r) for r, _ in conns))
    elapsed = time.monotonic() - started
    source.sending = False
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(0.2)
    return total / elapsed / 1e6


async def api_call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: object
) -> tuple[int, dict[str, object]]:
    async with http.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def wait_for_client(http: aiohttp.ClientSession, api: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = await api_call(http, "GET", f"{api}/clients/{CLIENT_ID}")
            data = body.get("data")
            if status == 200 and isinstance(data, dict) and data["connection_state"] == "connected":
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"client {CLIENT_ID} did not register within {timeout:.0f}s")


def start_client(args: argparse.Namespace, root: Path, client_port: int) -> list[str]:
    if args.rport:
        (root / "rport.conf").write_text(
            f"""[client]
  server = "http://127.0.0.1:{client_port}"
  auth = "{CLIENT_AUTH}"
  id = "{CLIENT_ID}"
  use_system_id = false
  data_dir = "{root}/client-data"
  allow_root = true
  updates_interval = '0'
[logging]
  log_level = "error"
  log_file = "{root}/rport.log"
[monitoring]
  enabled = false
"""
        )
        return [args.rport, "-c", str(root / "rport.conf")]
    return [
        sys.executable,
        "-m",
        "tests.simulator",
        "--server",
        f"ws://127.0.0.1:{client_port}",
        "--auth",
        CLIENT_AUTH,
        "--id-prefix",
        "bench-",
        "--jitter",
        "0",
        "--keep-alive",
        "0",
        "--no-monitoring",
        "--report",
        "3600",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each transfer")
    parser.add_argument("--streams", default="1,4", help="parallel streams to measure")
    parser.add_argument("--rport", default="", help="path of a real rport client binary")
    parser.add_argument("--direction", choices=["up", "down", "both"], default="both")
    parser.add_argument(
        "--server-wrapper",
        default="",
        help="command prefix for rportd, e.g. 'py-spy record -f raw -o prof.txt --'",
    )
    parser.add_argument(
        "--server-binary",
        default="",
        help="run this server executable with the same rportd.conf (e.g. upstream's rportd)",
    )
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]

    root = Path(tempfile.mkdtemp(prefix="rportd-tunnel-bench-"))
    client_port, api_port = free_port(), free_port()
    config = write_config(root, client_port, api_port, '  used_ports = ["33000-33999"]\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server_cmd = [args.server_binary] if args.server_binary else [sys.executable, "-m", "rportd"]
    server = await asyncio.create_subprocess_exec(
        *shlex.split(args.server_wrapper),
        *server_cmd,
        "-c",
        str(config),
        env=env,
        cwd=str(REPO),
    )
    client = await asyncio.create_subprocess_exec(
        *start_client(args, root, client_port),
        env=env,
        cwd=str(root),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    endpoint = Endpoint()
    sink = await asyncio.start_server(endpoint.sink, "127.0.0.1", 0)
    source = await asyncio.start_server(endpoint.source, "127.0.0.1", 0)
    api = f"http://127.0.0.1:{api_port}/api/v1"
    auth = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}
    results = []
    pid = server.pid
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            await wait_for_client(http, api, 30)
            pid = rportd_pid(server.pid, bool(args.server_wrapper))
            ports = {}
            for name, srv in (("up", sink), ("down", source)):
                remote = str(srv.sockets[0].getsockname()[1])
                status, body = await api_call(
                    http,
                    "PUT",
                    f"{api}/clients/{CLIENT_ID}/tunnels",
                    params={"remote": remote, "skip-idle-timeout": "true"},
                )
                assert status == 200, body
                data = body["data"]
                assert isinstance(data, dict)
                ports[name] = (int(data["lport"]), int(remote))
            directions = ["up", "down"] if args.direction == "both" else [args.direction]
            for direction in directions:
                tunnel_port, direct_port = ports[direction]
                measure = upload if direction == "up" else download
                target = endpoint
                for n in streams:
                    direct = await measure(direct_port, n, args.seconds, target)
                    user_before, sys_before = cpu_seconds(pid)
                    client_before = sum(cpu_seconds(client.pid))
                    through = await measure(tunnel_port, n, args.seconds, target)
                    user_after, sys_after = cpu_seconds(pid)
                    client_cpu = sum(cpu_seconds(client.pid)) - client_before
                    gigabytes = through * args.seconds / 1e3
                    user, system = user_after - user_before, sys_after - sys_before
                    results.append(
                        {
                            "direction": direction,
                            "streams": n,
                            "tunnel_MBps": round(through, 1),
                            "direct_MBps": round(direct, 1),
                            "server_cpu_s_per_GB": round((user + system) / gigabytes, 2)
                            if through
                            else None,
                            "of_which_kernel": round(system / (user + system), 2)
                            if user + system
                            else None,
                            "client_cpu_s_per_GB": round(client_cpu / gigabytes, 2)
                            if through
                            else None,
                        }
                    )
    finally:
        sink.close()
        source.close()
        client.send_signal(signal.SIGINT)
        os.kill(pid, signal.SIGTERM)  # rportd itself, also when wrapped (py-spy then saves)
        await asyncio.gather(client.wait(), server.wait())
    kind = f"real client {args.rport}" if args.rport else "simulator client"
    server_name = args.server_binary or "rportd"
    print(f"# {server_name} tunnel throughput, {kind}, {args.seconds:.0f} s per transfer")
    print(
        f"{'direction':<10}{'streams':>8}{'tunnel MB/s':>14}{'direct MB/s':>14}"
        f"{'server CPU s/GB':>18}{'kernel share':>14}{'client CPU s/GB':>18}"
    )
    for r in results:
        print(
            f"{r['direction']:<10}{r['streams']:>8}{r['tunnel_MBps']:>14}{r['direct_MBps']:>14}"
            f"{r['server_cpu_s_per_GB']!s:>18}{r['of_which_kernel']!s:>14}"
            f"{r['client_cpu_s_per_GB']!s:>18}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
