"""Fixtures for tunnel tests: a connected simulated client and local echo servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from rportd.app import RportServer
from tests.conftest import CLIENT_AUTH, client_url
from tests.simulator import RportClientSim, SimulatorConfig

ConnectClient = Callable[..., Awaitable[RportClientSim]]


def sim_config(server: RportServer, **kwargs: Any) -> SimulatorConfig:
    kwargs.setdefault("auth", ":".join(CLIENT_AUTH))
    kwargs.setdefault("client_id", "c1")
    kwargs.setdefault("connect_jitter", 0.0)
    kwargs.setdefault("backoff_min", 0.2)
    kwargs.setdefault("backoff_max", 1.0)
    kwargs.setdefault("keep_alive", 0)
    kwargs.setdefault("monitoring_enabled", False)
    return SimulatorConfig(server=client_url(server), **kwargs)


@pytest.fixture
async def connect_client() -> AsyncIterator[ConnectClient]:
    """Start simulated clients and wait until they are registered; stopped at the end."""
    started: list[RportClientSim] = []

    async def factory(server: RportServer, **kwargs: Any) -> RportClientSim:
        sim = RportClientSim(sim_config(server, **kwargs))
        started.append(sim)
        await sim.start()
        await sim.wait_registered(10)
        return sim

    yield factory
    for sim in started:
        await sim.stop()


class _UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo:" + data, addr)


@pytest.fixture
async def udp_echo_port() -> AsyncIterator[int]:
    """A UDP server on 127.0.0.1 answering ``echo:<datagram>``."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_UDPEcho, local_addr=("127.0.0.1", 0))
    yield int(transport.get_extra_info("sockname")[1])
    transport.close()


def free_pool_port(server: RportServer, udp: bool = False) -> int:
    """A port of the server's tunnel pool that nothing listens on right now."""
    for port in sorted(server.tunnels.ports.allowed):
        kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]
        ok = True
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    ok = False
        if ok and port not in server.tunnels.ports.in_use:
            return port
    raise AssertionError("no free port in the tunnel pool")


def port_bindable(port: int, udp: bool = False) -> bool:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def echo_through(port: int, payload: bytes, chunk: int = 65536) -> bytes:
    """Send ``payload`` to 127.0.0.1:port while reading the echo; return what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for i in range(0, len(payload), chunk):
            writer.write(payload[i : i + chunk])
            await writer.drain()

    async def receive() -> bytes:
        got = bytearray()
        while len(got) < len(payload):
            data = await reader.read(1 << 20)
            if not data:
                break
            got += data
        return bytes(got)

    try:
        _, received = await asyncio.gather(send(), receive())
    finally:
        writer.close()
    return received


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """Whether the other side closes the connection (EOF or reset) without sending data."""
    try:
        return await asyncio.wait_for(reader.read(1 << 16), timeout) == b""
    except ConnectionResetError:
        return True


def free_port_outside_pool(server: RportServer) -> int:
    """A TCP port outside the tunnel pool that nothing uses now, below Linux's ephemeral range
    (32768+), so an outgoing connection elsewhere on the machine cannot take it meanwhile."""
    allowed = server.tunnels.ports.allowed
    for port in range(20000, 32768):
        if port not in allowed and port_bindable(port):
            return port
    raise AssertionError("no free port outside the tunnel pool below 32768")
