"""What the benchmarks share: free ports, a throw-away rportd config, /proc readings."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADMIN = ("admin", "bench-password-1")
CLIENT_AUTH = "bench:bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(root: Path, client_port: int, api_port: int, server_extra: str = "") -> Path:
    """An ``rportd.conf`` under ``root``: quiet logs, no monitoring, the bench credentials."""
    path = root / "rportd.conf"
    path.write_text(
        f"""[server]
  address = "127.0.0.1:{client_port}"
  key_seed = "bench-seed"
  auth = "{CLIENT_AUTH}"
  data_dir = "{root}/data"
  allow_root = true
{server_extra}[logging]
  log_level = "error"
  log_file = "{root}/rportd.log"
[api]
  address = "127.0.0.1:{api_port}"
  auth = "{ADMIN[0]}:{ADMIN[1]}"
  jwt_secret = "bench-jwt-secret-bench-jwt-secret-1"
[monitoring]
  enabled = false
"""
    )
    return path


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def resident_mib(pid: int) -> float:
    """Resident memory of a process in MiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
