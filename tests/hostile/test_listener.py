"""The client listener before login: bounded memory, short deadlines, no idle peer keeps
clients out (issue items 1-3). Hostile peers come from 127.0.0.2, the real client from
127.0.0.1; 100 hostile connections stand in for the 500 of the report (same effect)."""

from __future__ import annotations

import asyncio
import struct

import aiohttp

from tests.hostile.conftest import (
    ADMIN,
    HOSTILE_IP,
    UPGRADE,
    ServerFactory,
    closed_within,
    open_from,
    sim_config,
    upgraded_from,
)
from tests.simulator import RportClientSim

MIB = 1024 * 1024


async def test_huge_websocket_frame_is_refused_before_login(make_rportd: ServerFactory) -> None:
    server = await make_rportd()
    before = server.rss_bytes()
    reader, writer = await upgraded_from(HOSTILE_IP, server.client_port)
    # A masked binary frame announcing 2^62 bytes, then as much as the server takes.
    writer.write(b"\x82\xff" + struct.pack("!Q", 1 << 62) + b"\0\0\0\0")
    sent = 0
    chunk = b"\0" * MIB
    try:
        while sent < 256 * MIB:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 5)
            sent += len(chunk)
    except (ConnectionError, TimeoutError):
        pass
    assert await closed_within(reader, 5)
    # The socket buffers hold a few MiB; the server kept none of it.
    assert sent < 32 * MIB, f"the server took {sent // MIB} MiB before closing"
    assert server.rss_bytes() - before < 32 * MIB


async def test_large_ssh_packet_is_refused_before_login(make_rportd: ServerFactory) -> None:
    server = await make_rportd()
    reader, writer = await upgraded_from(HOSTILE_IP, server.client_port)

    def frame(payload: bytes) -> bytes:  # masked with a zero key: payload as is
        assert len(payload) < 126
        return bytes((0x82, 0x80 | len(payload))) + b"\0\0\0\0" + payload

    writer.write(frame(b"SSH-2.0-hostile\r\n"))
    # An SSH packet header announcing 1 MiB: far above anything a client sends before login.
    writer.write(frame(struct.pack("!I", MIB) + b"\x04\x14" + b"\0" * 10))
    await writer.drain()
    assert await closed_within(reader, 5)


async def test_silent_upgrades_keep_no_client_out(
    make_rportd: ServerFactory, sims: list[RportClientSim]
) -> None:
    # One handshake slot, as upstream's default gives a 2-CPU machine.
    server = await make_rportd(server={"ssh_handshake_stage_timeout": "3s"})
    hostile = []
    for _ in range(100):
        reader, writer = await open_from(HOSTILE_IP, server.client_port)
        writer.write(UPGRADE)
        hostile.append((reader, writer))
    await asyncio.sleep(0.5)
    legit = RportClientSim(sim_config(server))
    sims.append(legit)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await legit.start()
    await legit.wait_registered(10)
    print(
        f"legitimate client registered in {loop.time() - started:.2f}s beside 100 silent upgrades"
    )
    # Every silent upgrade is gone after the SSH-version stage's deadline (3 s) at most.
    closed = await asyncio.gather(*(closed_within(r, 6) for r, _ in hostile))
    assert all(closed), f"{closed.count(False)} silent upgrades still open"
    for _, writer in hostile:
        writer.close()


async def test_stalled_key_exchange_is_closed(make_rportd: ServerFactory) -> None:
    server = await make_rportd(server={"ssh_handshake_stage_timeout": "2s"})
    reader, writer = await upgraded_from(HOSTILE_IP, server.client_port)
    line = b"SSH-2.0-stalls\r\n"
    writer.write(bytes((0x82, 0x80 | len(line))) + b"\0\0\0\0" + line)
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await closed_within(reader, 6)
    assert loop.time() - started < 5
    assert any(
        "no login within 2s" in line or "no key exchange" in line for line in server.log_lines()
    )


async def test_idle_and_slow_connections_are_closed(make_rportd: ServerFactory) -> None:
    server = await make_rportd(server={"idle_timeout": "2s"}, api={"idle_timeout": "2s"})
    idle, slow = [], []
    for port in (server.client_port, server.api_port):
        for _ in range(20):
            idle.append(await open_from(HOSTILE_IP, port))
            reader, writer = await open_from(HOSTILE_IP, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            slow.append((reader, writer))

    async def trickle() -> None:  # slowloris: one header byte per 0.3 s
        for _ in range(30):
            await asyncio.sleep(0.3)
            for _, writer in slow:
                if not writer.is_closing():
                    writer.write(b"X")

    dribble = asyncio.create_task(trickle())
    try:
        idle_closed = await asyncio.gather(*(closed_within(r, 6) for r, _ in idle))
        slow_closed = await asyncio.gather(*(closed_within(r, 6) for r, _ in slow))
    finally:
        dribble.cancel()
    assert all(idle_closed), f"{idle_closed.count(False)} idle connections still open"
    assert all(slow_closed), f"{slow_closed.count(False)} slowloris connections still open"
    for _, writer in idle + slow:
        writer.close()


async def test_pending_connections_are_capped_per_source(make_rportd: ServerFactory) -> None:
    """Beyond the cap, the oldest connection without a request makes room for a new one."""
    server = await make_rportd(api={"max_pending_connections_per_ip": 10})
    first = [await open_from(HOSTILE_IP, server.api_port) for _ in range(10)]
    await asyncio.sleep(1.5)  # older than the eviction grace
    later = [await open_from(HOSTILE_IP, server.api_port) for _ in range(10)]
    closed = await asyncio.gather(*(closed_within(r, 3) for r, _ in first))
    assert all(closed), f"{closed.count(False)} of the oldest idle connections still open"
    # The newer ones stay, and another source is not limited by them.
    assert not any(await asyncio.gather(*(closed_within(r, 0.5) for r, _ in later)))
    reader, writer = await open_from("127.0.0.1", server.api_port)
    writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 401")
    for _, w in [*first, *later, (reader, writer)]:
        w.close()


async def test_large_results_still_arrive_after_login(
    make_rportd: ServerFactory, sims: list[RportClientSim]
) -> None:
    """After login the limits are the protocol's again: a 300 KiB ``cmd_result`` packet
    (protocol.md §2.7, §7.6) is far above the pre-login caps."""
    server = await make_rportd()
    sim = RportClientSim(sim_config(server, keep_alive=0, commands_allow=[".*"], commands_deny=[]))
    sims.append(sim)
    await sim.start()
    await sim.wait_registered(10)
    headers = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}
    body = {"command": "yes 0123456789abcdef | head -c 300000", "timeout_sec": 30}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{server.api_base}/clients/legit/commands", json=body) as resp:
            assert resp.status == 200, await resp.text()
            jid = (await resp.json())["data"]["jid"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            async with http.get(f"{server.api_base}/clients/legit/commands/{jid}") as resp:
                job = (await resp.json())["data"]
            if job["status"] != "running" or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert job["status"] == "successful", job
    assert len(job["result"]["stdout"]) == 300000
    assert sim.registered  # still the same connection


async def test_slow_body_is_cut_off(make_rportd: ServerFactory) -> None:
    """``POST /login`` needs no credentials: its body must still arrive in time."""
    server = await make_rportd(api={"idle_timeout": "2s"})
    reader, writer = await open_from(HOSTILE_IP, server.api_port)
    writer.write(
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    await writer.drain()

    async def trickle() -> None:
        for _ in range(20):
            await asyncio.sleep(0.3)
            if writer.is_closing():
                return
            writer.write(b" ")

    dribble = asyncio.create_task(trickle())
    try:
        status = await asyncio.wait_for(reader.readline(), 6)
    finally:
        dribble.cancel()
    assert status.startswith(b"HTTP/1.1 408"), status
    assert await closed_within(reader, 4)  # after lingering 2 s at most
    writer.close()
