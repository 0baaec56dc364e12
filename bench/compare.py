"""Upstream's server beside rportd: every figure of the performance table, same client, same config.

Each round starts one server (upstream's binary from ``--server-binary``, then
rportd, alternately), one measured client ``bench-1`` (the real ``rport`` with
``--rport``, else the simulator), and measures in this order:

* tunnel throughput and server CPU per GiB, both directions, 1 and 4 streams;
* latency a tunnel adds to a 64 B round trip (p50, p99);
* command round trip (``POST /clients/{id}/commands``, poll until finished), idle;
* then ``--clients`` simulated clients connect: server RSS per client, ``GET /clients``
  latency, the command round trip again and a multi-client job on all of them.

Figures are medians over ``--rounds`` rounds. CPU figures come from
``/proc/<pid>/stat`` and are less sensitive to other load than wall-clock ones.

    python -m bench [--server-binary PATH] [--rport PATH] [--clients 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.harness import ADMIN, CLIENT_AUTH, REPO, cpu_seconds, free_port, resident_mib
from bench.harness import write_config as harness_config
from bench.tunnel_throughput import (
    CLIENT_ID,
    Endpoint,
    api_call,
    download,
    start_client,
    upload,
    wait_for_client,
)

GIB = 1 << 30
COMMAND = "/usr/bin/echo hi"
FINISHED = frozenset({"successful", "failed", "unknown"})
Figures = dict[str, float]


@dataclass(frozen=True)
class Server:
    """How to start one of the two servers."""

    name: str
    argv: list[str]


@dataclass
class Running:
    """A started server and its measured client."""

    pid: int
    api: str
    client_port: int
    http: aiohttp.ClientSession
    root: Path


def write_config(root: Path, client_port: int, api_port: int) -> Path:
    """The bench config with monitoring on (the default), tunnel ports, room for 1,000 ids."""
    path = harness_config(root, client_port, api_port, '  used_ports = ["33000-33999"]\n')
    text = path.read_text().replace("enabled = false", "enabled = true")
    # A multi-job naming 1,000 clients is larger than the default 10 KiB body limit.
    text = text.replace("[api]\n", "[api]\n  max_request_bytes = 1048576\n")
    path.write_text(text)
    return path


@asynccontextmanager
async def started(server: Server, args: argparse.Namespace) -> AsyncIterator[Running]:
    """``server`` and the measured client, until the block ends."""
    root = Path(tempfile.mkdtemp(prefix="rportd-compare-"))
    client_port, api_port = free_port(), free_port()
    config = write_config(root, client_port, api_port)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        *server.argv, "-c", str(config), env=env, cwd=str(REPO)
    )
    client = await asyncio.create_subprocess_exec(
        *start_client(args, root, client_port),
        *([] if args.rport else ["--allow-all-commands"]),
        env=env,
        cwd=str(root),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    auth = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}
    api = f"http://127.0.0.1:{api_port}/api/v1"
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            await wait_for_client(http, api, 60)
            yield Running(proc.pid, api, client_port, http, root)
    finally:
        client.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(client.wait(), proc.wait())


async def open_tunnel(run: Running, remote: int) -> int:
    """A tunnel from a server port to ``remote`` on the client; the server port."""
    status, body = await api_call(
        run.http,
        "PUT",
        f"{run.api}/clients/{CLIENT_ID}/tunnels",
        params={"remote": str(remote), "skip-idle-timeout": "true"},
    )
    if status != 200:
        raise SystemExit(f"opening a tunnel failed: {status} {body}")
    data = body["data"]
    assert isinstance(data, dict)
    return int(data["lport"])


async def tunnel_figures(run: Running, seconds: float) -> Figures:
    """Throughput and server CPU per GiB, app -> client (up) and client -> app (down)."""
    endpoint = Endpoint()
    sink = await asyncio.start_server(endpoint.sink, "127.0.0.1", 0)
    source = await asyncio.start_server(endpoint.source, "127.0.0.1", 0)
    figures: Figures = {}
    try:
        for direction, srv, measure in (("up", sink, upload), ("down", source, download)):
            port = await open_tunnel(run, srv.sockets[0].getsockname()[1])
            for streams in (1, 4):
                before = sum(cpu_seconds(run.pid))
                mbps = await measure(port, streams, seconds, endpoint)
                cpu = sum(cpu_seconds(run.pid)) - before
                gib = mbps * 1e6 * seconds / GIB
                figures[f"tunnel_{direction}_{streams}_MBps"] = mbps
                figures[f"cpu_{direction}_{streams}_s_per_GiB"] = cpu / gib if gib else 0.0
    finally:
        sink.close()
        source.close()
    return figures


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
    except ConnectionError:
        pass
    writer.close()


async def round_trips(port: int, count: int) -> list[float]:
    """Seconds of ``count`` 64 B write-then-read-back round trips on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b"r" * 64
    times = []
    for _ in range(count):
        started = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(64)
        times.append(time.perf_counter() - started)
    writer.close()
    return times


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def latency_figures(run: Running, count: int) -> Figures:
    """Microseconds a tunnel adds to a 64 B round trip, beside the direct round trip."""
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    try:
        direct_port = echo.sockets[0].getsockname()[1]
        port = await open_tunnel(run, direct_port)
        await round_trips(port, 200)  # warm up
        direct = await round_trips(direct_port, count)
        tunnel = await round_trips(port, count)
    finally:
        echo.close()
    return {
        f"rtt_added_p{p}_us": (percentile(tunnel, p) - percentile(direct, p)) * 1e6
        for p in (50, 99)
    }


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{check.__qualname__}: not so within {timeout:g}s")
        await asyncio.sleep(0.001)


async def start_job(run: Running, url: str, request: dict[str, object]) -> str:
    """``POST`` a command request; the job id the server answers with."""
    status, body = await api_call(run.http, "POST", url, json=request)
    data = body.get("data")
    if status != 200 or not isinstance(data, dict):
        raise SystemExit(f"POST {url}: {status} {body}")
    return str(data["jid"])


async def command_round_trip(run: Running) -> float:
    """Milliseconds from ``POST /clients/{id}/commands`` until a poll sees it finished."""
    started = time.perf_counter()
    url = f"{run.api}/clients/{CLIENT_ID}/commands"
    job_url = f"{url}/{await start_job(run, url, {'command': COMMAND, 'timeout_sec': 30})}"

    async def finished() -> bool:
        status, body = await api_call(run.http, "GET", job_url)
        job = body.get("data")
        return status == 200 and isinstance(job, dict) and job.get("status") in FINISHED

    await _poll(finished, 30)
    return (time.perf_counter() - started) * 1e3


async def command_figures(run: Running, count: int, prefix: str) -> Figures:
    """Median round trip, and the server's CPU milliseconds per round trip (polls included)."""
    await command_round_trip(run)  # warm up
    before = sum(cpu_seconds(run.pid))
    times = [await command_round_trip(run) for _ in range(count)]
    cpu = sum(cpu_seconds(run.pid)) - before
    return {
        f"{prefix}_command_rtt_p50_ms": statistics.median(times),
        f"{prefix}_command_cpu_ms": cpu / count * 1e3,
    }


async def _count(run: Running, url: str) -> int:
    status, body = await api_call(run.http, "GET", url)
    meta = body.get("meta")
    if status != 200 or not isinstance(meta, dict):
        raise SystemExit(f"GET {url}: {status} {body}")
    return int(meta["count"])


async def multi_job_seconds(run: Running, client_ids: list[str]) -> float:
    """Seconds from ``POST /commands`` on every client until every job has finished."""
    started = time.perf_counter()
    request = {
        "client_ids": client_ids,
        "command": COMMAND,
        "timeout_sec": 60,
        "execute_concurrently": True,
    }
    jid = await start_job(run, f"{run.api}/commands", request)
    jobs = f"{run.api}/commands/{jid}/jobs?page[limit]=1"

    async def finished() -> bool:
        await asyncio.sleep(0.05)
        if await _count(run, jobs) < len(client_ids):
            return False
        return await _count(run, jobs + "&filter[status]=running") == 0

    await _poll(finished, 300)
    return time.perf_counter() - started


async def connected_count(run: Running) -> int:
    status, body = await api_call(run.http, "GET", f"{run.api}/status")
    data = body.get("data")
    if status != 200 or not isinstance(data, dict):
        raise SystemExit(f"GET /status: {status} {body}")
    return int(data["clients_connected"])


async def list_clients_ms(run: Running, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, _ = await api_call(run.http, "GET", f"{run.api}/clients")
        times.append((time.perf_counter() - started) * 1e3)
        assert status == 200
    return statistics.median(times)


async def load_figures(run: Running, clients: int) -> Figures:
    """With ``clients`` simulated clients connected: RSS, list, command, multi-job."""
    before = resident_mib(run.pid)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sims = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.simulator", "--server"],
        f"ws://127.0.0.1:{run.client_port}",
        *["--auth", CLIENT_AUTH, "--count", str(clients), "--id-prefix", "load-"],
        *["--jitter", "0", "--ramp", str(clients / 200), "--allow-all-commands"],
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def all_connected() -> bool:
            await asyncio.sleep(0.5)
            return await connected_count(run) >= clients + 1

        await _poll(all_connected, 300)
        await asyncio.sleep(5)  # first monitoring reports, settled buffers
        rss = resident_mib(run.pid)
        figures = {
            "kib_per_client": (rss - before) * 1024 / clients,
            "list_clients_p50_ms": await list_clients_ms(run, 20),
        }
        figures.update(await command_figures(run, 10, "loaded"))
        ids = [f"load-{n}" for n in range(1, clients + 1)]
        before = sum(cpu_seconds(run.pid))
        figures["multi_job_s"] = await multi_job_seconds(run, ids)
        figures["multi_job_cpu_s"] = sum(cpu_seconds(run.pid)) - before
        return figures
    finally:
        sims.send_signal(signal.SIGINT)
        await sims.wait()


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def one_round(server: Server, args: argparse.Namespace) -> Figures:
    async with started(server, args) as run:
        note("  tunnels")
        figures = await tunnel_figures(run, args.seconds)
        note("  latency")
        figures.update(await latency_figures(run, args.round_trips))
        note("  command round trip")
        figures.update(await command_figures(run, 20, "idle"))
        if args.clients:
            note(f"  {args.clients} clients")
            figures.update(await load_figures(run, args.clients))
        note("  " + json.dumps({k: round(v, 3) for k, v in figures.items()}))
        return figures


# (key, label, lower is better)
ROWS: list[tuple[str, str, bool]] = [
    *(
        (f"cpu_{d}_{n}_s_per_GiB", f"server CPU s/GiB tunnelled, {d}, {n} stream(s)", True)
        for d in ("up", "down")
        for n in (1, 4)
    ),
    *(
        (f"tunnel_{d}_{n}_MBps", f"tunnel throughput MB/s, {d}, {n} stream(s)", False)
        for d in ("up", "down")
        for n in (1, 4)
    ),
    ("rtt_added_p50_us", "latency added by a tunnel, 64 B RTT p50 (µs)", True),
    ("rtt_added_p99_us", "latency added by a tunnel, 64 B RTT p99 (µs)", True),
    ("idle_command_rtt_p50_ms", "command round trip, idle (ms)", True),
    ("idle_command_cpu_ms", "server CPU per command round trip, idle (ms)", True),
    ("loaded_command_rtt_p50_ms", "command round trip, N clients (ms)", True),
    ("loaded_command_cpu_ms", "server CPU per command round trip, N clients (ms)", True),
    ("multi_job_s", "multi-job on N clients, until all finished (s)", True),
    ("multi_job_cpu_s", "server CPU for that multi-job (s)", True),
    ("list_clients_p50_ms", "GET /clients p50, N clients (ms)", True),
    ("kib_per_client", "server RSS per client (KiB)", True),
]


def table(medians: dict[str, Figures], clients: int) -> str:
    names = list(medians)
    lines = [
        "| figure | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |"),
        "|---|" + "---|" * (len(names) + (len(names) == 2)),
    ]
    for key, label, _lower in ROWS:
        values = [medians[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        cells = [f"{v:.3g}" if v is not None else "-" for v in values]
        row = f"| {label.replace('N clients', f'{clients} clients')} | " + " | ".join(cells)
        if len(names) == 2:
            a, b = values
            row += f" | {b / a:.2f}x" if a and b else " | -"
        lines.append(row + " |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-binary", default="", help="upstream's rportd executable")
    parser.add_argument(
        "--server-name", default="upstream", help="column name of --server-binary's figures"
    )
    parser.add_argument("--rport", default="", help="the real rport client executable")
    parser.add_argument("--clients", type=int, default=1000, help="simulated clients (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each transfer")
    parser.add_argument("--round-trips", type=int, default=2000, help="64 B round trips")
    parser.add_argument("--json", default="bench-result.json", help="where to write the figures")
    args = parser.parse_args()
    servers = [Server("rportd", [sys.executable, "-m", "rportd"])]
    if args.server_binary:
        servers.insert(0, Server(args.server_name, [args.server_binary]))
    runs: dict[str, list[Figures]] = {s.name: [] for s in servers}
    for i in range(args.rounds):
        for server in servers:
            note(f"round {i + 1}/{args.rounds}: {server.name}")
            runs[server.name].append(await one_round(server, args))
    medians = {
        name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        for name, rounds in runs.items()
    }
    load = os.getloadavg()
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f}, "
        f"client: {args.rport or 'simulator'}, medians of {args.rounds} rounds"
    )
    print(header)
    print(table(medians, args.clients))
    report = json.dumps({"about": header, "medians": medians, "rounds": runs}, indent=1)
    await asyncio.to_thread(Path(args.json).write_text, report)


def run() -> None:
    asyncio.run(main())
