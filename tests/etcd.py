"""A real etcd cluster on 127.0.0.1 for tests, from the system's /usr/bin/etcd.

``EtcdCluster(root)`` gives 3 members with their own data dirs under ``root`` and free
ports; ``await start()`` returns once every member is healthy. Members can be killed,
stopped and restarted one by one; ``await close()`` kills whatever still runs (members
also die with the test process: PR_SET_PDEATHSIG). ``await cluster.proxied()`` puts a
:class:`FaultProxy` in front of every member's client port, for one rportd node, so a
test can cut that node from some or all members.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.faultproxy import FaultProxy
from tests.ha.cluster import free_port

ETCD = os.environ.get("RPORTD_TEST_ETCD", "/usr/bin/etcd")
SETUP_HINT = "run tests/setup/system-packages.sh (as root) to install etcd-server"
# Fast failure detection for tests: elections within ~1 s. The smallest lease TTL etcd
# grants is then ceil(1.5 * election timeout) = 2 s.
HEARTBEAT_MS = 100
ELECTION_MS = 1000
_PR_SET_PDEATHSIG = 1


def etcd_binary() -> str:
    """The etcd binary, or fail the test saying how to install it."""
    if not (os.path.isfile(ETCD) and os.access(ETCD, os.X_OK)):
        pytest.fail(f"etcd not found at {ETCD}: {SETUP_HINT}", pytrace=False)
    return ETCD


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EtcdMember:
    """One etcd process: its name, ports and data dir survive restarts."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.data_dir = root / name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.initial_cluster = ""

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start the process (rejoins with its data dir after a stop or kill)."""
        assert not self.running, f"{self.name} already runs"
        state = "existing" if self.data_dir.exists() else "new"
        args = [
            etcd_binary(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=rportd-test",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_MS}",
            "--logger=zap",
            "--log-level=warn",
        ]
        # Only our flags count: drop ETCD_* settings of the environment (etcd reads them),
        # except the one etcd needs to run at all on a non-amd64 machine.
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}
        if os.uname().machine not in ("x86_64", "amd64"):
            env["ETCD_UNSUPPORTED_ARCH"] = {"aarch64": "arm64"}.get(
                os.uname().machine, os.uname().machine
            )
        log = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
        await self.process.wait()

    async def healthy(self, session: aiohttp.ClientSession) -> bool:
        """True when this member answers and sees a leader with a quorum."""
        try:
            async with session.get(
                f"{self.client_url}/health", timeout=aiohttp.ClientTimeout(total=1)
            ) as resp:
                body = await resp.json(content_type=None)
                return resp.status == 200 and body.get("health") == "true"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path})\n" + "\n".join(text)


class EtcdProxies:
    """A :class:`FaultProxy` in front of each member, as one node sees the cluster."""

    def __init__(self, proxies: list[FaultProxy]) -> None:
        self.proxies = proxies

    @property
    def endpoints(self) -> list[str]:
        return [proxy.url for proxy in self.proxies]

    def cut(self, member: int | None = None, direction: str = "both") -> None:
        """Cut this node from one member, or from all (``None``)."""
        for index, proxy in enumerate(self.proxies):
            if member is None or member == index:
                proxy.cut(direction)

    def heal(self) -> None:
        for proxy in self.proxies:
            proxy.heal()


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 under ``root``."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.size = size
        self.members = self._new_members(root)
        self._proxies: list[FaultProxy] = []

    def _new_members(self, root: Path) -> list[EtcdMember]:
        members = [EtcdMember(f"etcd{i}", root) for i in range(self.size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for member in members:
            member.initial_cluster = initial
        return members

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of all members (direct, no proxy)."""
        return [member.client_url for member in self.members]

    async def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start every member and wait until all are healthy.

        A member that exits at once most likely lost its port to another process
        between :func:`free_port` and its bind: then all start again on new ports.
        """
        etcd_binary()
        for attempt in range(attempts):
            root = self.root if attempt == 0 else self.root / f"retry{attempt}"
            if attempt:
                await self._kill_all()
                self.members = self._new_members(root)
            root.mkdir(parents=True, exist_ok=True)
            for member in self.members:
                await member.start()
            try:
                await self.wait_healthy(self.members, timeout=timeout)
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise

    async def wait_healthy(
        self, members: list[EtcdMember] | None = None, timeout: float = 30.0
    ) -> None:
        """Wait until the given members (default: all running ones) report healthy.

        RuntimeError (with the logs) when one of the given members has exited.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                waiting = [m for m in (members or self.members) if m.running]
                dead = [m for m in (members or []) if not m.running]
                if dead:
                    raise RuntimeError(f"etcd member exited:\n{self.tail()}")
                states = await asyncio.gather(*(m.healthy(session) for m in waiting))
                if all(states):
                    return
                if loop.time() > deadline:
                    raise TimeoutError(f"etcd cluster not healthy in {timeout} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def restart(self, index: int) -> None:
        member = self.members[index]
        await member.stop()
        await member.start()
        await self.wait_healthy([member])

    async def leader(self) -> int:
        """Index of the member that is the Raft leader now."""
        async with aiohttp.ClientSession() as session:
            for member in self.members:
                if not member.running:
                    continue
                try:
                    async with session.post(
                        f"{member.client_url}/v3/maintenance/status",
                        json={},
                        timeout=aiohttp.ClientTimeout(total=1),
                    ) as resp:
                        body = await resp.json(content_type=None)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    continue
                leader_id = body.get("leader")
                if leader_id and leader_id == body.get("header", {}).get("member_id"):
                    return self.members.index(member)
        raise RuntimeError(f"no etcd member is the leader:\n{self.tail()}")

    async def proxied(self) -> EtcdProxies:
        """Proxies in front of every member's client port, stopped by :meth:`close`."""
        proxies = []
        for member in self.members:
            proxy = FaultProxy("127.0.0.1", member.client_port)
            await proxy.start()
            self._proxies.append(proxy)
            proxies.append(proxy)
        return EtcdProxies(proxies)

    def tail(self) -> str:
        return "\n".join(member.tail() for member in self.members)

    async def close(self) -> None:
        """Stop proxies, kill every member (their data is throw-away)."""
        for proxy in self._proxies:
            await proxy.stop()
        self._proxies.clear()
        await self._kill_all()

    async def _kill_all(self) -> None:
        for member in self.members:
            member.kill()
        for member in self.members:
            if member.process is not None:
                await member.process.wait()
