"""Tunnel lifetimes: idle timeout, auto-close, client reconnects and server restarts."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp

from rportd.app import RportServer
from rportd.clients.syncback import ClientSyncSource
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.simulator import RportClientSim
from tests.tunnels.conftest import (
    ConnectClient,
    echo_through,
    eventually,
    free_pool_port,
    port_bindable,
    sim_config,
)


class FakeClock:
    """The scheduler's clock, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def use_fake_clock(server: RportServer) -> FakeClock:
    clock = FakeClock()
    server.tunnels.scheduler.clock = clock
    return clock


async def advance(server: RportServer, clock: FakeClock, seconds: float) -> None:
    clock.offset += seconds
    server.tunnels.scheduler.wake()
    for _ in range(5):
        await asyncio.sleep(0)


async def create(api: Api, **params: str) -> dict[str, object]:
    status, body = await api.put("/clients/c1/tunnels", params=params)
    assert status == 200, body
    data = body["data"]
    assert isinstance(data, dict)
    return data


async def tunnel_ids(api: Api) -> list[str]:
    _, body = await api.get("/clients/c1")
    return [t["id"] for t in body["data"]["tunnels"]]


async def test_idle_timeout_closes_unused_tunnels_only(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    clock = use_fake_clock(server)
    await connect_client(server)
    busy = await create(api, remote=str(echo_port), **{"idle-timeout-minutes": "1"})
    unused = await create(api, remote=f"localhost:{echo_port}", **{"idle-timeout-minutes": "1"})
    forever = await create(
        api, remote=str(echo_port), acl="127.0.0.1", **{"skip-idle-timeout": "true"}
    )
    assert forever["idle_timeout_minutes"] == 0 and busy["idle_timeout_minutes"] == 1
    busy_port = int(str(busy["lport"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", busy_port)
    writer.write(b"x")
    await reader.readexactly(1)

    # After a minute the never-used tunnel is gone; the one with an open connection is not.
    await advance(server, clock, 61)
    await eventually(lambda: port_bindable(int(str(unused["lport"]))), what="idle port freed")
    assert await tunnel_ids(api) == [busy["id"], forever["id"]]

    # Its minute starts when its last connection closes.
    writer.close()
    await eventually(
        lambda: all(
            t.runtime and not t.runtime.active_connections for _, t in server.tunnels.running
        ),
        what="closed",
    )
    await advance(server, clock, 45)
    assert await tunnel_ids(api) == [busy["id"], forever["id"]]
    await advance(server, clock, 30)
    await eventually(lambda: port_bindable(busy_port), what="busy tunnel closed when idle")
    assert await tunnel_ids(api) == [forever["id"]]
    await advance(server, clock, 7 * 24 * 3600)
    assert await tunnel_ids(api) == [forever["id"]]


async def test_udp_activity_keeps_a_tunnel_alive(
    server: RportServer, api: Api, connect_client: ConnectClient, udp_echo_port: int
) -> None:
    clock = use_fake_clock(server)
    await connect_client(server)
    tunnel = await create(
        api, remote=str(udp_echo_port), protocol="udp", **{"idle-timeout-minutes": "2"}
    )
    port = int(str(tunnel["lport"]))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
    )
    await advance(server, clock, 100)  # created 100 s ago: not idle yet
    transport.sendto(b"still here")
    await eventually(lambda: bool(server.tunnels.running), what="tunnel running")
    await asyncio.sleep(0.1)
    await advance(server, clock, 100)  # 100 s after the datagram
    assert await tunnel_ids(api) == [tunnel["id"]]
    await advance(server, clock, 30)
    await eventually(lambda: not server.tunnels.running, what="idle UDP tunnel closed")
    transport.close()


async def test_auto_close_ends_a_tunnel_even_while_in_use(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    clock = use_fake_clock(server)
    await connect_client(server)
    tunnel = await create(
        api, remote=str(echo_port), **{"auto-close": "2m", "skip-idle-timeout": "1"}
    )
    assert tunnel["auto_close"] == 120 * 10**9
    port = int(str(tunnel["lport"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x")
    await reader.readexactly(1)
    await advance(server, clock, 119)
    assert await tunnel_ids(api) == [tunnel["id"]]
    await advance(server, clock, 2)
    await eventually(lambda: port_bindable(port), what="port freed at auto-close")
    assert await reader.read(10) == b""
    writer.close()
    assert await tunnel_ids(api) == []


async def test_auto_close_in_real_time(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    await connect_client(server)
    tunnel = await create(api, remote=str(echo_port), **{"auto-close": "300ms"})
    await eventually(lambda: port_bindable(int(str(tunnel["lport"]))), timeout=3)
    assert await tunnel_ids(api) == []


async def test_reconnect_recreates_api_tunnels(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    sim = await connect_client(server)
    fixed_port = free_pool_port(server)
    fixed = await create(api, local=str(fixed_port), remote=str(echo_port))
    random = await create(api, remote=f"localhost:{echo_port}", acl="127.0.0.1")
    await sim.stop()
    await eventually(lambda: port_bindable(fixed_port), what="listeners stopped")

    await connect_client(server)
    _, body = await api.get("/clients/c1")
    tunnels = {t["rhost"]: t for t in body["data"]["tunnels"]}
    assert set(tunnels) == {"127.0.0.1", "localhost"}
    again_fixed, again_random = tunnels["127.0.0.1"], tunnels["localhost"]
    assert again_fixed["lport"] == str(fixed_port) and again_fixed["lport_random"] is False
    assert again_random["lport_random"] is True and again_random["acl"] == "127.0.0.1"
    assert again_random["lport"] == random["lport"]  # still free: the same port again
    assert {again_fixed["id"], again_random["id"]} == {"3", "4"}
    assert again_fixed["owner"] == fixed["owner"] == "admin"
    assert random["id"] == "2"
    for tunnel in (again_fixed, again_random):
        assert await echo_through(int(tunnel["lport"]), b"back again") == b"back again"


async def test_client_remotes_become_listeners_and_survive_a_server_restart(
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    echo_port: int,
) -> None:
    server = await make_server("n1")
    sim = await connect_client(server, remotes=[str(echo_port)])
    assert sim.remotes_reported is not None
    (reported,) = sim.remotes_reported
    assert reported["lport_random"] is True and reported["idle_timeout_minutes"] == 0
    assert await echo_through(int(reported["lport"]), b"config tunnel") == b"config tunnel"
    api = Api(http, api_base(server), ADMIN)
    await create(api, remote=f"localhost:{echo_port}", **{"skip-idle-timeout": "1"})
    await sim.stop()
    await server.stop()

    # A new server on the same clients.db knows the tunnels and re-creates the API one.
    server = await make_server("n1")
    api = Api(http, api_base(server), ADMIN)
    _, body = await api.get("/clients/c1")
    assert body["data"]["connection_state"] == "disconnected"
    assert len(body["data"]["tunnels"]) == 2
    sim = await connect_client(server, remotes=[str(echo_port)])
    _, body = await api.get("/clients/c1")
    rhosts = sorted(t["rhost"] for t in body["data"]["tunnels"])
    assert rhosts == ["127.0.0.1", "localhost"]
    for tunnel in body["data"]["tunnels"]:
        assert await echo_through(int(tunnel["lport"]), b"restored") == b"restored"


async def test_a_busy_configured_port_refuses_the_connection_cleanly(
    server: RportServer, connect_client: ConnectClient, echo_port: int
) -> None:
    with socket.socket() as busy:
        taken = free_pool_port(server)
        busy.bind(("0.0.0.0", taken))
        busy.listen()
        free = free_pool_port(server)
        assert free != taken
        sim = RportClientSim(
            sim_config(server, remotes=[f"{free}:{echo_port}", f"{taken}:{echo_port}"])
        )
        try:
            result = await sim.connect_once()
        finally:
            await sim.stop()
    assert (result.ok, result.stage) == (False, "new_connection")
    assert result.error == f"Local port {taken} already in use."
    # The tunnel started before the refusal is gone again.
    assert port_bindable(free) and not server.tunnels.running
    assert server.clients.registry.get_connected("c1") is None
    assert not server.tunnels.ports.in_use


async def test_server_stop_releases_every_listener(
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    echo_port: int,
    udp_echo_port: int,
) -> None:
    server = await make_server("stopping")
    api = Api(http, api_base(server), ADMIN)
    await connect_client(server)
    tcp = await create(api, remote=str(echo_port))
    udp = await create(api, remote=str(udp_echo_port), protocol="udp")
    await server.stop()
    await eventually(
        lambda: (
            port_bindable(int(str(tcp["lport"])))
            and port_bindable(int(str(udp["lport"])), udp=True)
        ),
        what="listeners closed at shutdown",
    )
    assert not server.tunnels.running and len(server.tunnels.scheduler) == 0


async def test_a_newer_record_from_the_ha_peer_replaces_reestablished_tunnels(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    """Sync back arriving after the client switched back: the peer's tunnels win."""
    sim = await connect_client(server)
    stale = await create(api, remote=str(echo_port))
    await sim.stop()
    await eventually(lambda: port_bindable(int(str(stale["lport"]))), what="listener stopped")
    await connect_client(server)
    (restored,) = await tunnel_ids(api)
    # What the secondary recorded while it served the client: the stale tunnel was
    # deleted there and another one made.
    client = server.clients.registry.get("c1")
    assert client is not None
    record = client.row()
    details = client.details()
    made_there = {**dict(client.tunnels[0].to_json()), "id": "7", "acl": "127.0.0.1"}
    details["tunnels"] = [made_there]
    record.update(details=json.dumps(details), disconnected_at=None)

    assert await ClientSyncSource(server.clients.registry).store([record]) == 1
    (tunnel,) = (await api.get("/clients/c1"))[1]["data"]["tunnels"]
    assert tunnel["id"] != restored and tunnel["acl"] == "127.0.0.1"
    assert await echo_through(int(tunnel["lport"]), b"followed") == b"followed"
    # Once per connection: a later (older) copy changes nothing.
    assert await ClientSyncSource(server.clients.registry).store([record]) == 0
    assert [t["id"] for t in (await api.get("/clients/c1"))[1]["data"]["tunnels"]] == [tunnel["id"]]
