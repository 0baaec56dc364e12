"""rportd as systemd runs it: sd_notify and its watchdog, JSON logs, SIGHUP, health probes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.ha.cluster import CLIENT_AUTH, Node
from tests.simulator import RportClientSim, SimulatorConfig


class NotifySocket:
    """The datagram socket systemd listens on (``$NOTIFY_SOCKET``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.received: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.received.extend(data.decode().splitlines())

    async def wait_for(self, message: str, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while message not in self.received:
            if loop.time() > deadline:
                raise AssertionError(f"no {message!r} from rportd; got {self.received}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.sock.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    solo = Node(
        "solo",
        tmp_path / "solo",
        "primary",
        extra={
            "logging": {"log_format": "json", "log_level": "info"},
            "api": {"access_log_file": str(tmp_path / "access.log")},
        },
    )
    yield solo
    solo.kill()
    await solo.wait_exit()


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def wait_healthy(node: Node, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            status, _ = await get(f"{node.api_url}/healthz")
            if status == 200:
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"rportd did not come up:\n{node.tail()}")


def log_lines(path: Path) -> list[dict[str, object]]:
    """Every line of a JSON log, parsed (a line that is not one object fails the test)."""
    lines = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        lines.append(entry)
    return lines


async def wait_logged(path: Path, check: str, timeout: float = 10.0) -> list[dict[str, object]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        entries = await asyncio.to_thread(lambda: log_lines(path) if path.exists() else [])
        if any(check in str(e["message"]) for e in entries):
            return entries
        if loop.time() > deadline:
            raise AssertionError(f"{check!r} not logged in {path}: {entries[-5:]}")
        await asyncio.sleep(0.05)


async def test_systemd_notify_watchdog_json_logs_and_log_reopen(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    try:
        await node.start(wait=False)
        await notify.wait_for("READY=1")
        await wait_healthy(node)
        assert await get(f"{node.api_url}/readyz") == (200, {"status": "ready"})
        # The watchdog is fed (every WATCHDOG_USEC / 2) while the event loop runs.
        notify.received.clear()
        await notify.wait_for("WATCHDOG=1", timeout=2.0)
        notify.received.clear()
        await notify.wait_for("WATCHDOG=1", timeout=2.0)

        # JSON lines with structured fields: a client connects.
        sim = RportClientSim(
            SimulatorConfig(
                server=node.client_url,
                auth=":".join(CLIENT_AUTH),
                client_id="c1",
                connect_jitter=0.0,
                backoff_min=0.2,
            )
        )
        await sim.start()
        try:
            await sim.wait_registered(10)
            entries = await wait_logged(node.log_path, "client c1 (")
        finally:
            rotated = node.log_path.with_suffix(".log.1")
            node.log_path.rename(rotated)  # what logrotate does, then SIGHUP
            access_log = tmp_path / "access.log"
            access_log.rename(tmp_path / "access.log.1")
            assert node.process is not None
            node.process.send_signal(signal.SIGHUP)
            await wait_logged(node.log_path, "reopened log file")
            await sim.stop()
        connected = next(e for e in entries if str(e["message"]).startswith("client c1 ("))
        assert connected["client_id"] == "c1" and connected["peer"] == "127.0.0.1"
        assert connected["level"] == "INFO" and connected["logger"] == "rportd.clients.connection"
        assert str(connected["time"]).startswith("20") and "T" in str(connected["time"])

        # After SIGHUP the server logs to the new file: the client's disconnection.
        entries = await wait_logged(node.log_path, "disconnected")
        gone = next(e for e in entries if "disconnected" in str(e["message"]))
        assert gone["client_id"] == "c1"
        assert not any("disconnected" in str(e["message"]) for e in log_lines(rotated))
        assert not any(e["level"] == "WARNING" for e in log_lines(rotated) + entries)
        # The API access log was reopened too.
        assert (await get(f"{node.api_url}/healthz?after=rotation"))[0] == 200
        for _ in range(100):  # written by the access log's thread
            if access_log.exists() and "after=rotation" in access_log.read_text():
                break
            await asyncio.sleep(0.05)
        assert "GET /healthz?after=rotation" in access_log.read_text()
        assert "after=rotation" not in (tmp_path / "access.log.1").read_text()

        node.process.send_signal(signal.SIGTERM)
        await notify.wait_for("STOPPING=1")
        assert await asyncio.wait_for(node.process.wait(), 15) == 0
    finally:
        await notify.close()
