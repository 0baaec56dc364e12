"""rportd nodes as real processes on 127.0.0.1, for HA tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt

from rportd.ha import auth

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SECRET = "test-cluster-secret"
KEY_SEED = "ha-test-key-seed"
JWT_SECRET = "ha-test-jwt-secret-which-is-long-enough"
ADMIN = ("admin", "admin-password-123")
CLIENT_AUTH = ("client1", "secret-1")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this test session."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def toml_value(value: Any) -> str:
    return json.dumps(value)


@dataclass
class Node:
    """One rportd process with its own config and data dir."""

    name: str
    root: Path
    role: str
    peers: list[str] = field(default_factory=list)
    primary: str = ""
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def config_path(self) -> Path:
        return self.root / "rportd.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "rportd.log"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        auth_file = self.root / "client-auth.json"
        if not auth_file.exists():
            auth_file.write_text(json.dumps({CLIENT_AUTH[0]: CLIENT_AUTH[1]}))
        users_file = self.root / "api-users.json"
        if not users_file.exists():
            hashed = bcrypt.hashpw(ADMIN[1].encode(), bcrypt.gensalt(4)).decode()
            users_file.write_text(
                json.dumps(
                    [
                        {
                            "username": ADMIN[0],
                            "password": "$2y$" + hashed[4:],
                            "groups": ["Administrators"],
                        }
                    ]
                )
            )
        sections: dict[str, dict[str, Any]] = {
            "server": {
                "address": f"127.0.0.1:{self.client_port}",
                "data_dir": str(self.root / "data"),
                "key_seed": KEY_SEED,
                "auth_file": str(auth_file),
                "used_ports": ["33000-33999"] if self.role == "primary" else ["34000-34999"],
                "allow_root": True,
            },
            "logging": {"log_level": "debug", "log_file": str(self.log_path)},
            "api": {
                "address": f"127.0.0.1:{self.api_port}",
                "auth_file": str(users_file),
                "jwt_secret": JWT_SECRET,
                "user_login_wait": 0,
            },
            "ha": {
                "role": self.role,
                "cluster_secret": CLUSTER_SECRET,
                "peers": self.peers,
                "takeover_after": "2s",
                "drain_grace": "10s",
                "knock_hold": "8s",
            },
        }
        if self.primary:
            sections["ha"]["primary"] = self.primary
        for section, values in self.extra.items():
            sections.setdefault(section, {}).update(values)
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines.extend(f"  {key} = {toml_value(value)}" for key, value in values.items())
        self.config_path.write_text("\n".join(lines) + "\n")

    async def start(self, wait: bool = True) -> None:
        self.write_config()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        stderr = await asyncio.to_thread(open, self.root / "stderr.txt", "ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rportd",
            "-c",
            str(self.config_path),
            cwd=str(REPO),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        stderr.close()
        if wait:
            await self.wait_ready()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                await self.status()
                return
            except (aiohttp.ClientError, OSError, AssertionError):
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not come up:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        elif self.process is not None:
            await self.process.wait()

    async def wait_exit(self) -> None:
        if self.process is not None:
            await self.process.wait()

    def tail(self, lines: int = 60) -> str:
        text = ""
        for path in (self.log_path, self.root / "stderr.txt"):
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-lines:])
        return text

    async def signed(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """A node-to-node call signed with the cluster secret."""
        full = f"{self.api_url}/api/v1/ha{path}"
        headers = {auth.HEADER: auth.sign(CLUSTER_SECRET, "test", 0, method, f"/api/v1/ha{path}")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, full, headers=headers, timeout=aiohttp.ClientTimeout(total=5), **kwargs
            ) as resp,
        ):
            body = await resp.json(content_type=None)
            return resp.status, body

    async def status(self) -> dict[str, Any]:
        status, body = await self.signed("GET", "/status")
        assert status == 200, body
        return dict(body["data"])

    async def api(
        self, method: str, path: str, user: tuple[str, str] = ADMIN, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": aiohttp.encode_basic_auth(*user), **kwargs.pop("headers", {})}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, f"{self.api_url}/api/v1{path}", headers=headers, **kwargs
            ) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

    async def wait_state(
        self, state: str, timeout: float = 20.0, *, role: str | None = None
    ) -> dict[str, Any]:
        """The node's status once it is in ``state`` (and has ``role``, if given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: dict[str, Any] = {}
        while loop.time() < deadline:
            try:
                last = await self.status()
                if last["state"] == state and role in (None, last["role"]):
                    return last
            except (aiohttp.ClientError, OSError, AssertionError):
                pass
            await asyncio.sleep(0.1)
        wanted = state if role is None else f"{state} {role}"
        raise TimeoutError(f"{self.name} not {wanted} (last {last}):\n{self.tail()}")


class Cluster:
    """A primary and a secondary that know each other."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []
        p_client, p_api = free_port(), free_port()
        s_client, s_api = free_port(), free_port()
        primary_url = f"http://127.0.0.1:{p_api}"
        secondary_url = f"http://127.0.0.1:{s_api}"
        self.primary = self.add(
            Node("primary", root / "primary", "primary", [secondary_url], "", {}, p_client, p_api)
        )
        self.secondary = self.add(
            Node(
                "secondary",
                root / "secondary",
                "secondary",
                [primary_url],
                primary_url,
                {},
                s_client,
                s_api,
            )
        )

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    async def start(self) -> None:
        await self.primary.start()
        await self.secondary.start()
        await self.secondary.wait_state("standby")

    async def close(self) -> None:
        for node in self.nodes:
            node.kill()
        for node in self.nodes:
            await node.wait_exit()
