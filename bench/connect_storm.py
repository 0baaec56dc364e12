"""Connect storm: N clients connect at once (a failover); how long until all are registered?

Runs rportd as its own process and the client simulator in another, on
127.0.0.1, and prints the time to register everyone, the server's resident
memory and CPU time, and the memory per client.

    python -m bench.connect_storm --clients 2000 [--jitter 0] [--handshakes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import (
    ADMIN,
    CLIENT_AUTH,
    REPO,
    cpu_seconds,
    free_port,
    resident_mib,
    write_config,
)


def proc_stats(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of a process."""
    return resident_mib(pid), sum(cpu_seconds(pid))


async def connected(api: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{api}/api/v1/status",
            headers={"Authorization": aiohttp.encode_basic_auth(*ADMIN)},
        ) as resp,
    ):
        return int((await resp.json())["data"]["clients_connected"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--jitter", type=float, default=0.0, help="client registration jitter (s)")
    parser.add_argument("--handshakes", type=int, default=1, help="max_concurrent_ssh_handshakes")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rportd-storm-"))
    client_port, api_port = free_port(), free_port()
    config = write_config(
        root,
        client_port,
        api_port,
        f"  max_concurrent_ssh_handshakes = {args.handshakes}\n"
        # The simulated clients all come from 127.0.0.1; in a real storm they are many sources.
        "  max_pending_connections_per_ip = 100000\n",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rportd", "-c", str(config), env=env, cwd=str(REPO)
    )
    api = f"http://127.0.0.1:{api_port}"
    for _ in range(100):
        try:
            await connected(api)
            break
        except (aiohttp.ClientError, OSError):
            await asyncio.sleep(0.1)
    idle_rss, _ = proc_stats(server.pid)
    _, cpu_before = proc_stats(server.pid)
    sims = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.simulator",
        "--server",
        f"ws://127.0.0.1:{client_port}",
        "--auth",
        CLIENT_AUTH,
        "--count",
        str(args.clients),
        "--jitter",
        str(args.jitter),
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    started = time.monotonic()
    count = 0
    milestones: dict[int, float] = {}
    try:
        while time.monotonic() - started < args.timeout:
            count = await connected(api)
            for pct in (50, 90, 100):
                if pct not in milestones and count >= args.clients * pct / 100:
                    milestones[pct] = time.monotonic() - started
            if count >= args.clients:
                break
            await asyncio.sleep(0.5)
        _rss, cpu = proc_stats(server.pid)
        await asyncio.sleep(5)
        steady_rss, steady_cpu = proc_stats(server.pid)
    finally:
        sims.send_signal(signal.SIGINT)
        await sims.wait()
        server.send_signal(signal.SIGTERM)
        await server.wait()
    result = {
        "clients": args.clients,
        "registered": count,
        "jitter_s": args.jitter,
        "seconds_to_50%": round(milestones.get(50, -1), 1),
        "seconds_to_90%": round(milestones.get(90, -1), 1),
        "seconds_to_all": round(milestones.get(100, -1), 1),
        "server_cpu_s_for_storm": round(cpu - cpu_before, 1),
        "server_cpu_s_idle_5s_after": round(steady_cpu - cpu, 2),
        "server_rss_mib_idle_before": round(idle_rss, 1),
        "server_rss_mib_with_clients": round(steady_rss, 1),
        "kib_per_client": round((steady_rss - idle_rss) * 1024 / max(count, 1), 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
