"""The fault proxy itself, with plain TCP sockets on both sides."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.faultproxy import FaultProxy

QUIET = 0.3  # how long "nothing arrives" is watched


class Target:
    """A TCP server whose accepted connections the test drives by hand."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.put_nowait((reader, writer))

    async def next(self, timeout: float = 2.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.accepted.get(), timeout)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        while not self.accepted.empty():
            self.accepted.get_nowait()[1].close()
        await self.server.wait_closed()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    target = Target()
    await target.start()
    yield target
    await target.stop()


@pytest.fixture
async def proxy(target: Target) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", target.port)
    await proxy.start()
    yield proxy
    await proxy.stop()


Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(proxy: FaultProxy, target: Target) -> tuple[Pair, Pair]:
    """A client connection through the proxy and the target's end of it."""
    client = await asyncio.open_connection("127.0.0.1", proxy.port)
    return client, await target.next()


async def nothing_arrives(reader: asyncio.StreamReader) -> None:
    """Within QUIET, no byte, no EOF and no reset arrives (a silent drop)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET)


async def test_relays_both_ways_and_eof(proxy: FaultProxy, target: Target) -> None:
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    c_w.write(b"ping")
    assert await t_r.readexactly(4) == b"ping"
    t_w.write(b"pong" * 50_000)
    assert await c_r.readexactly(200_000) == b"pong" * 50_000
    c_w.write_eof()
    assert await t_r.read() == b""
    t_w.close()
    assert await c_r.read() == b""
    c_w.close()


async def test_cut_both_holds_bytes_silently_until_heal(proxy: FaultProxy, target: Target) -> None:
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    proxy.cut("both")
    c_w.write(b"to")
    t_w.write(b"from")
    await nothing_arrives(t_r)
    await nothing_arrives(c_r)
    proxy.heal()
    assert await asyncio.wait_for(t_r.readexactly(2), 2) == b"to"
    assert await asyncio.wait_for(c_r.readexactly(4), 2) == b"from"
    c_w.close()
    t_w.close()


async def test_cut_to_target_blocks_only_that_direction(proxy: FaultProxy, target: Target) -> None:
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    proxy.cut("to_target")
    c_w.write(b"request")
    c_w.write_eof()  # a FIN is held back like data
    await nothing_arrives(t_r)
    t_w.write(b"still flows")
    assert await asyncio.wait_for(c_r.readexactly(11), 2) == b"still flows"
    proxy.heal()
    assert await asyncio.wait_for(t_r.read(), 2) == b"request"
    c_w.close()
    t_w.close()


async def test_cut_from_target_blocks_only_that_direction(
    proxy: FaultProxy, target: Target
) -> None:
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    proxy.cut("from_target")
    t_w.write(b"reply")
    await nothing_arrives(c_r)
    c_w.write(b"still flows")
    assert await asyncio.wait_for(t_r.readexactly(11), 2) == b"still flows"
    proxy.heal()
    assert await asyncio.wait_for(c_r.readexactly(5), 2) == b"reply"
    c_w.close()
    t_w.close()


@pytest.mark.parametrize("direction", ["both", "to_target", "from_target"])
async def test_new_connection_during_cut_hangs_then_goes_through(
    proxy: FaultProxy, target: Target, direction: str
) -> None:
    proxy.cut(direction)
    c_r, c_w = await asyncio.open_connection("127.0.0.1", proxy.port)
    c_w.write(b"hello")
    with pytest.raises(TimeoutError):
        await target.next(timeout=QUIET)
    await nothing_arrives(c_r)
    proxy.heal()
    t_r, t_w = await target.next()
    assert await asyncio.wait_for(t_r.readexactly(5), 2) == b"hello"
    c_w.close()
    t_w.close()


async def test_reset_closes_both_sides_with_rst(proxy: FaultProxy, target: Target) -> None:
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    c_w.write(b"x")
    assert await t_r.readexactly(1) == b"x"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(c_r.read(10), 2)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(t_r.read(10), 2)
    c_w.close()
    t_w.close()
    # the proxy still takes new connections
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    c_w.write(b"again")
    assert await t_r.readexactly(5) == b"again"
    c_w.close()
    t_w.close()


async def test_target_down_is_refused(target: Target) -> None:
    proxy = FaultProxy("127.0.0.1", target.port)
    await proxy.start()
    await target.stop()
    try:
        c_r, c_w = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(c_r.read(1), 2)
        c_w.close()
    finally:
        await proxy.stop()
    await target.start()  # for the fixture's stop


async def test_delay_adds_latency_each_way(proxy: FaultProxy, target: Target) -> None:
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    proxy.delay(0.2)
    started = time.monotonic()
    c_w.write(b"a")
    await t_r.readexactly(1)
    t_w.write(b"b")
    await c_r.readexactly(1)
    assert time.monotonic() - started >= 0.4
    proxy.heal()
    c_w.close()
    t_w.close()


async def test_stop_closes_connections_and_port(target: Target) -> None:
    proxy = FaultProxy("127.0.0.1", target.port)
    port = await proxy.start()
    (c_r, c_w), (t_r, t_w) = await connect(proxy, target)
    proxy.cut()
    await proxy.stop()
    for reader in (c_r, t_r):
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 2)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    c_w.close()
    t_w.close()
