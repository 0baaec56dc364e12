"""The cost of ``[ha] synchronous``: API writes on a primary with a real secondary.

    python -m bench.sync_writes [--writes 300] [--concurrency 8]

Starts a primary and a secondary (two rportd processes on 127.0.0.1) once with
``synchronous = false`` and once with ``true``, creates client groups through
the primary's API, one after the other and then ``--concurrency`` at a time,
and prints milliseconds per write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import ADMIN, REPO, free_port, write_config

SECRET = "bench-cluster-secret"


class Node:
    """One rportd process of the pair."""

    def __init__(self, root: Path, role: str, peer_api: int, synchronous: bool) -> None:
        self.root = root
        self.role = role
        self.api_port = free_port()
        self.peer_api = peer_api
        self.synchronous = synchronous
        self.process: asyncio.subprocess.Process | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    async def start(self) -> None:
        self.root.mkdir(parents=True)
        path = write_config(self.root, free_port(), self.api_port)
        peer = f"http://127.0.0.1:{self.peer_api}"
        ha = (
            f'[ha]\n  role = "{self.role}"\n  cluster_secret = "{SECRET}"\n'
            f'  peers = ["{peer}"]\n  synchronous = {str(self.synchronous).lower()}\n'
        )
        if self.role == "secondary":
            ha += f'  primary = "{peer}"\n'
        path.write_text(path.read_text() + ha)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rportd",
            "-c",
            str(path),
            cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def wait_state(http: aiohttp.ClientSession, node: Node, state: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{node.api}/ha/status") as resp:
                if resp.status == 200 and (await resp.json())["data"]["state"] == state:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{node.role} not {state}")


async def write(http: aiohttp.ClientSession, node: Node, group_id: str) -> float:
    started = time.perf_counter()
    async with http.post(
        f"{node.api}/client-groups", json={"id": group_id, "description": "bench"}
    ) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"write {group_id}: HTTP {resp.status} {body}")
    return time.perf_counter() - started


async def measure(root: Path, synchronous: bool, writes: int, concurrency: int) -> None:
    p_api, s_api = free_port(), free_port()
    primary = Node(root / "primary", "primary", s_api, synchronous)
    primary.api_port = p_api
    secondary = Node(root / "secondary", "secondary", p_api, synchronous)
    secondary.api_port = s_api
    headers = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}
    async with aiohttp.ClientSession(headers=headers) as http:
        try:
            await primary.start()
            await wait_state(http, primary, "active")
            await secondary.start()
            await wait_state(http, secondary, "standby")
            for i in range(20):  # warm up
                await write(http, primary, f"warm-{i}")
            one_by_one = [await write(http, primary, f"seq-{i}") for i in range(writes)]
            gate = asyncio.Semaphore(concurrency)

            async def gated(i: int) -> float:
                async with gate:
                    return await write(http, primary, f"par-{i}")

            started = time.perf_counter()
            await asyncio.gather(*(gated(i) for i in range(writes)))
            elapsed = time.perf_counter() - started
        finally:
            await secondary.stop()
            await primary.stop()
    one_by_one.sort()
    print(
        f"synchronous = {str(synchronous).lower():5}  one at a time: "
        f"mean {statistics.mean(one_by_one) * 1000:6.2f} ms/write, "
        f"p50 {one_by_one[len(one_by_one) // 2] * 1000:6.2f}, "
        f"p99 {one_by_one[int(len(one_by_one) * 0.99) - 1] * 1000:6.2f};  "
        f"{concurrency} at a time: {elapsed / writes * 1000:6.2f} ms/write "
        f"({writes / elapsed:.0f} writes/s)"
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rportd-bench-sync-") as tmp:
        for synchronous in (False, True):
            await measure(Path(tmp) / str(synchronous), synchronous, args.writes, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
