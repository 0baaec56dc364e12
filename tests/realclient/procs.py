"""Real processes for the checker: an rportd (ours or upstream's) and the real rport client."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
KEY_SEED = "realclient-check-key-seed"
JWT_SECRET = "realclient-check-jwt-secret-long-enough"
ADMIN = ("admin", "realclient-admin-pw")
CLIENT_AUTH = ("rc-client", "rc-client-pw")
PORT_RANGE = range(42000, 43000)

_handed_out: set[int] = set()


def admin_auth() -> dict[str, str]:
    """Headers for a request as the API admin (basic auth)."""
    return {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}


def free_port() -> int:
    """A TCP and UDP port of 42000-42999 free now and not handed out before by this process."""
    for port in PORT_RANGE:
        if port in _handed_out:
            continue
        try:
            with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 42000-42999")


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    return json.dumps(value)  # strings, numbers, booleans and lists of them are valid TOML


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """TOML text of two-level sections."""
    out: list[str] = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out.extend(f"  {key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(out) + "\n"


def merge(base: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> None:
    for name, values in extra.items():
        base.setdefault(name, {}).update(values)


@dataclass
class Process:
    """A child process with its log file; started and stopped by its owner."""

    root: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "out.log"

    async def _spawn(self, *argv: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                "nice", "-n", "5", *argv, stdout=log, stderr=log, cwd=self.root
            )

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Server(Process):
    """rportd: `kind` "ours" (python -m rportd) or "upstream" (the Go binary at `binary`)."""

    kind: str = "ours"
    binary: str = ""
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    base: dict[str, dict[str, Any]] | None = None  # in place of the built-in config below
    client_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    used_ports: list[str] = field(default_factory=lambda: [str(free_port()) for _ in range(10)])

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    @property
    def config_path(self) -> Path:
        return self.root / "rportd.conf"

    def config(self) -> dict[str, dict[str, Any]]:
        if self.base is not None:
            conf = copy.deepcopy(self.base)
            merge(conf, self.extra)
            return conf
        conf = {
            "server": {
                "address": f"127.0.0.1:{self.client_port}",
                "url": [self.client_url],
                "key_seed": KEY_SEED,
                "auth": f"{CLIENT_AUTH[0]}:{CLIENT_AUTH[1]}",
                "data_dir": str(self.root / "data"),
                "used_ports": self.used_ports,
                "excluded_ports": [],
                "allow_root": os.geteuid() == 0,
            },
            "logging": {"log_level": "debug", "log_file": str(self.root / "rportd.log")},
            "api": {
                "address": f"127.0.0.1:{self.api_port}",
                "auth": f"{ADMIN[0]}:{ADMIN[1]}",
                "jwt_secret": JWT_SECRET,
            },
        }
        merge(conf, self.extra)
        return conf

    async def start(self) -> None:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(toml(self.config()))
        if self.kind == "upstream":
            await self._spawn(self.binary, "-c", str(self.config_path))
        else:
            argv = [sys.executable, "-m", "rportd", "-c", str(self.config_path)]
            env_pp = os.environ.get("PYTHONPATH", "")
            os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{env_pp}" if env_pp else str(REPO)
            await self._spawn(*argv)
        await self.wait_api()

    async def wait_api(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                if not self.running:
                    raise RuntimeError(f"{self.kind} rportd exited:\n{self.server_log()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.api_url}/status", headers=admin_auth()) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.3)
        raise RuntimeError(f"{self.kind} rportd API did not answer:\n{self.server_log()}")

    def server_log(self, lines: int = 30) -> str:
        path = self.root / "rportd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join((text + self.log_tail(lines)).splitlines()[-lines:])


@dataclass
class Client(Process):
    """The real rport client, configured from sections merged over a base config."""

    binary: str = ""
    server_url: str = ""
    fingerprint: str = ""
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    connection: dict[str, Any] = field(
        default_factory=lambda: {"keep_alive": "10s", "max_retry_interval": "5s"}
    )

    @property
    def config_path(self) -> Path:
        return self.root / "rport.conf"

    def config(self) -> dict[str, dict[str, Any]]:
        conf: dict[str, dict[str, Any]] = {
            "client": {
                "server": self.server_url,
                "fingerprint": self.fingerprint,
                "auth": f"{CLIENT_AUTH[0]}:{CLIENT_AUTH[1]}",
                "id": "rc-real-client-1",
                "name": "real client",
                "use_system_id": False,
                "use_hostname": False,
                "tags": ["realclient", "check"],
                "labels": {"city": "Berlin", "role": "check"},
                "allow_root": True,
                "data_dir": str(self.root / "data"),
                "updates_interval": "0",
                "tunnel_allowed": ["127.0.0.0/8"],
            },
            "connection": dict(self.connection),
            "logging": {"log_level": "debug", "log_file": str(self.root / "rport.log")},
            "remote-commands": {"enabled": True, "allow": [".*"], "order": ["allow", "deny"]},
            "remote-scripts": {"enabled": True},
            "monitoring": {"enabled": True, "pm_enabled": True},
            "file-reception": {"enabled": True, "protected": ["/bin", "/usr/bin"]},
        }
        merge(conf, self.extra)
        return conf

    async def start(self) -> None:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(toml(self.config()))
        await self._spawn(self.binary, "-c", str(self.config_path))

    def client_log(self, lines: int = 40) -> str:
        path = self.root / "rport.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join((text + self.log_tail(lines)).splitlines()[-lines:])
