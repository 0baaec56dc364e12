"""A real rportd process for hostile-client tests, and raw sockets from other addresses.

Hostile peers connect from 127.0.0.2 (Linux routes all of 127/8 to loopback), the
legitimate client and admin from 127.0.0.1, so per-source limits can tell them apart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from tests.ha.cluster import Node, toml_value
from tests.simulator import RportClientSim, SimulatorConfig

ADMIN = ("admin", "admin-password-123")
OTHER_ADMIN = ("root2", "root2-password-123")
CLIENT_AUTH = ("client1", "secret-1")
HOSTILE_IP = "127.0.0.2"


@dataclass
class ServerProcess(Node):
    """One standalone rportd process (no ``[ha]``); ``extra`` overrides the base config."""

    role: str = ""

    @property
    def api_base(self) -> str:
        return f"{self.api_url}/api/v1"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        users = self.root / "api-users.json"
        if not users.exists():
            entries = []
            for name, password in (ADMIN, OTHER_ADMIN):
                hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
                entries.append({"username": name, "password": "$2y$" + hashed[4:], "groups": []})
            entries[0]["groups"] = ["Administrators"]
            users.write_text(json.dumps(entries))
        sections: dict[str, dict[str, Any]] = {
            "server": {
                "address": f"127.0.0.1:{self.client_port}",
                "data_dir": str(self.root / "data"),
                "key_seed": "hostile-test-seed",
                "auth": ":".join(CLIENT_AUTH),
                "used_ports": ["35000-35999"],
                "allow_root": True,
                "max_concurrent_ssh_handshakes": 1,  # upstream's default on 2 CPUs
            },
            "logging": {"log_level": "info", "log_file": str(self.log_path)},
            "api": {
                "address": f"127.0.0.1:{self.api_port}",
                "auth_file": str(users),
                "jwt_secret": "hostile-test-jwt-secret-long-enough-0123456789",
            },
        }
        for name, values in self.extra.items():
            sections.setdefault(name, {}).update(values)
        lines = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"  {key} = {toml_value(value)}" for key, value in values.items())
        self.config_path.write_text("\n".join(lines) + "\n")

    async def status(self) -> dict[str, Any]:
        """``/status`` (asks only that the API answers: any status will do)."""
        async with aiohttp.ClientSession() as http, http.get(self.api_base + "/status") as resp:
            return {"status": resp.status}

    def rss_bytes(self) -> int:
        """Resident memory of the process, from /proc."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


ServerFactory = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def make_rportd(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start rportd processes; every one is stopped at the end."""
    started: list[ServerProcess] = []

    async def factory(**sections: dict[str, Any]) -> ServerProcess:
        name = f"rportd{len(started)}"
        proc = ServerProcess(name, tmp_path / name, extra=sections)
        started.append(proc)
        await proc.start()
        return proc

    yield factory
    for proc in started:
        await proc.stop()


async def open_from(ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to 127.0.0.1:``port`` from source address ``ip``."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: rport 0.9.14\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rport-v1\r\n\r\n"
)


async def upgraded_from(ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw rport-v1 WebSocket (101 read), nothing sent after the upgrade."""
    reader, writer = await open_from(ip, port)
    writer.write(UPGRADE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (data is read and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def sim_config(server: ServerProcess, **kwargs: Any) -> SimulatorConfig:
    kwargs.setdefault("auth", ":".join(CLIENT_AUTH))
    kwargs.setdefault("client_id", "legit")
    kwargs.setdefault("connect_jitter", 0.0)
    kwargs.setdefault("backoff_min", 0.5)
    kwargs.setdefault("backoff_max", 1.0)
    return SimulatorConfig(server=server.client_url, **kwargs)


@pytest.fixture
async def sims() -> AsyncIterator[list[RportClientSim]]:
    running: list[RportClientSim] = []
    yield running
    for sim in running:
        await sim.stop()


def from_address(ip: str) -> aiohttp.ClientSession:
    """An HTTP session whose connections come from ``ip``."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(ip, 0), force_close=True)
    )
