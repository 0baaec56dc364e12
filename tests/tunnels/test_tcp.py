"""TCP tunnels end to end: API, real listeners, the simulated client, a real echo server."""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp

from rportd.app import RportServer
from rportd.tunnels.model import Tunnel
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.tunnels.conftest import (
    ConnectClient,
    closed_by_peer,
    echo_through,
    eventually,
    free_pool_port,
    free_port_outside_pool,
    port_bindable,
)


async def create(api: Api, client_id: str = "c1", **params: str) -> dict[str, object]:
    status, body = await api.put(f"/clients/{client_id}/tunnels", params=params)
    assert status == 200, body
    data = body["data"]
    assert isinstance(data, dict)
    return data


def running(server: RportServer) -> list[Tunnel]:
    return [t for _, t in server.tunnels.running]


async def test_echo_of_several_mib_is_byte_for_byte(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    sim = await connect_client(server)
    tunnel = await create(api, remote=str(echo_port), name="echo", scheme="ssh")
    assert tunnel["id"] == "1" and tunnel["lport_random"] is True and tunnel["owner"] == "admin"
    assert tunnel["lhost"] == "0.0.0.0" and tunnel["rhost"] == "127.0.0.1"
    assert tunnel["name"] == "echo" and tunnel["scheme"] == "ssh"
    assert tunnel["idle_timeout_minutes"] == 5 and tunnel["auto_close"] == 0
    payload = os.urandom(6 << 20)
    assert await echo_through(int(str(tunnel["lport"])), payload) == payload
    assert sim.tunnel_requests == [f"127.0.0.1:{echo_port}"]

    # The client object and GET /tunnels list it.
    _, body = await api.get("/clients/c1")
    assert [t["id"] for t in body["data"]["tunnels"]] == ["1"]
    _, body = await api.get("/tunnels")
    assert body == {"data": [{**tunnel, "client_id": "c1"}]}
    assert list(body["data"][0])[-3:] == ["id", "client_id", "created_at"]


async def test_transfers_stay_intact_across_key_renegotiations(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    """Channel data goes out on its own short path; it must yield to re-keying."""
    await connect_client(server)
    (conn,) = server.listener._connections
    conn._rekey_bytes = 512 * 1024  # re-key every 512 KiB the server sends, instead of every GiB
    kexinits = 0
    send_kexinit = conn._send_kexinit

    def counting_kexinit() -> None:
        nonlocal kexinits
        kexinits += 1
        send_kexinit()

    conn._send_kexinit = counting_kexinit  # type: ignore[method-assign]
    tunnel = await create(api, remote=str(echo_port))
    payload = os.urandom(6 << 20)
    assert await echo_through(int(str(tunnel["lport"])), payload) == payload
    assert kexinits >= 8


FLIP = bytes(255 - i for i in range(256))


async def _flip_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An echo that inverts every byte, so two tunnels' traffic cannot be mixed up."""
    try:
        while data := await reader.read(65536):
            writer.write(data.translate(FLIP))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_two_tunnels_many_concurrent_connections(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    flip_server = await asyncio.start_server(_flip_echo, "127.0.0.1", 0)
    flip_port = flip_server.sockets[0].getsockname()[1]
    try:
        await connect_client(server)
        plain = int(str((await create(api, remote=str(echo_port)))["lport"]))
        flipped = int(str((await create(api, remote=str(flip_port)))["lport"]))
        payloads = [os.urandom(200_000 + i) for i in range(60)]
        results = await asyncio.gather(
            *(echo_through(plain if i % 2 else flipped, p) for i, p in enumerate(payloads))
        )
        for i, (payload, got) in enumerate(zip(payloads, results, strict=True)):
            assert got == (payload if i % 2 else payload.translate(FLIP)), f"connection {i}"
        await eventually(
            lambda: all(
                t.runtime is not None and t.runtime.active_connections == 0 for t in running(server)
            ),
            what="every tunnel connection closed",
        )
    finally:
        flip_server.close()


async def _firehose(
    writer_total: list[int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    chunk = b"x" * 65536
    try:
        while True:
            writer.write(chunk)
            await writer.drain()
            writer_total[0] += len(chunk)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def test_a_slow_reader_does_not_make_the_server_buffer(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    sent = [0]
    source = await asyncio.start_server(lambda r, w: _firehose(sent, r, w), "127.0.0.1", 0)
    try:
        await connect_client(server)
        port = int(
            str((await create(api, remote=str(source.sockets[0].getsockname()[1])))["lport"])
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        # Read nothing: the destination must be stopped by back-pressure, not buffered.
        await eventually(lambda: sent[0] > 0, what="data flowing")
        previous = -1
        while sent[0] != previous:
            previous = sent[0]
            await asyncio.sleep(0.5)
        (tunnel,) = running(server)
        assert tunnel.runtime is not None and tunnel.runtime.tcp is not None
        (pipe,) = tunnel.runtime.tcp.connections
        assert pipe.tcp is not None and pipe.chan is not None
        assert pipe.tcp.get_write_buffer_size() <= 256 * 1024
        assert pipe.received - pipe.tcp.get_write_buffer_size() < 64 << 20
        # ...and everything arrives once the reader catches up.
        stalled_at = sent[0]
        got = 0
        while got < stalled_at:
            got += len(await asyncio.wait_for(reader.read(1 << 20), 5))
        writer.close()
    finally:
        source.close()


async def test_the_other_direction_stops_the_tcp_reader(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    """A destination that reads nothing: the server stops reading the local socket."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()

    sink = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        await connect_client(server)
        port = int(str((await create(api, remote=str(sink.sockets[0].getsockname()[1])))["lport"]))
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        blocked = False
        for _ in range(4096):  # at most 256 MiB
            writer.write(b"y" * 65536)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                blocked = True
                break
        assert blocked, "the tunnel accepted 256 MiB nobody reads"
        (tunnel,) = running(server)
        assert tunnel.runtime is not None and tunnel.runtime.tcp is not None
        (pipe,) = tunnel.runtime.tcp.connections
        assert pipe.chan is not None and pipe.chan.get_write_buffer_size() <= 256 * 1024
        assert pipe.tcp is not None and not pipe.tcp.is_reading()
        writer.transport.abort()
        for w in accepted:
            w.close()
    finally:
        sink.close()


async def test_client_disconnect_mid_transfer_frees_everything(
    server: RportServer, connect_client: ConnectClient, echo_port: int
) -> None:
    before = asyncio.all_tasks()
    # A connection per API request, so no keep-alive handler outlives the test's checks.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    api = Api(http, api_base(server), ADMIN)
    sim = await connect_client(server)
    tunnel = await create(api, remote=str(echo_port))
    port = int(str(tunnel["lport"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(os.urandom(1 << 20))
    await reader.readexactly(1 << 20)

    async def keep_sending() -> None:
        try:
            while True:
                writer.write(os.urandom(65536))
                await writer.drain()
        except ConnectionError:
            pass

    sender = asyncio.create_task(keep_sending())
    await asyncio.sleep(0.1)
    await sim.stop()

    # The local connection is closed, the listener is gone and the port is free.
    async def drained() -> None:
        try:
            while await reader.read(1 << 20):
                pass
        except ConnectionError:
            pass

    await asyncio.wait_for(drained(), 5)
    await asyncio.wait_for(sender, 5)
    writer.close()
    await eventually(lambda: port_bindable(port), what=f"port {port} free again")
    assert running(server) == [] and not server.tunnels.ports.in_use
    # No task is left behind by the tunnel, the channel, the connection or the client.
    await api.get("/clients/c1")
    current = asyncio.current_task()

    def stray() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}

    try:
        await eventually(lambda: not stray(), what="no stray tasks")
    except AssertionError:
        raise AssertionError(f"tasks left behind: {stray()}") from None
    # The tunnel stays in the client record for a reconnect.
    _, body = await api.get("/clients/c1")
    assert body["data"]["connection_state"] == "disconnected"
    assert [t["lport"] for t in body["data"]["tunnels"]] == [str(port)]
    await http.close()


async def test_acl_closes_refused_connections_before_any_byte(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    sim = await connect_client(server)
    tunnel = await create(api, remote=str(echo_port), acl="10.9.9.9,192.168.0.0/16")
    port = int(str(tunnel["lport"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello?")
    assert await closed_by_peer(reader)
    writer.close()
    assert sim.tunnel_requests == []

    path = f"/clients/c1/tunnels/{tunnel['id']}/acl"
    status, body = await api.put(path, json={"acl": "nonsense"})
    assert (status, body["errors"][0]["title"]) == (400, "invalid IP addr: nonsense")
    status, body = await api.put(path, json={"acl": "1.2.3.4", "other": 1})
    assert (status, body["errors"][0]["title"]) == (400, "Invalid JSON data.")
    assert (await api.put(path, json={"acl": "127.0.0.1"}))[0] == 204
    assert await echo_through(port, b"now it passes") == b"now it passes"
    _, body = await api.get("/clients/c1")
    assert body["data"]["tunnels"][0]["acl"] == "127.0.0.1"
    assert (await api.put(path, json={"acl": None}))[0] == 204
    assert await echo_through(port, b"open to all") == b"open to all"


async def test_delete_refuses_open_connections_unless_forced(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    await connect_client(server)
    tunnel = await create(api, remote=str(echo_port))
    port = int(str(tunnel["lport"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    path = f"/clients/c1/tunnels/{tunnel['id']}"
    status, body = await api.delete(path)
    assert (status, body["errors"][0]["title"]) == (409, "tunnel has 1 active connection(s)")
    status, body = await api.delete(path, params={"force": "yes"})
    assert (status, body["errors"][0]["title"]) == (400, "Invalid force param: yes.")
    status, body = await api.delete("/clients/c1/tunnels/99")
    assert (status, body["errors"][0]["title"]) == (404, "tunnel not found")
    assert (await api.delete(path, params={"force": "true"}))[0] == 204
    assert await closed_by_peer(reader)
    writer.close()
    assert port_bindable(port)
    _, body = await api.get("/clients/c1")
    assert body["data"]["tunnels"] == []
    # Without open connections a plain delete works.
    tunnel = await create(api, remote=str(echo_port))
    assert (await api.delete(f"/clients/c1/tunnels/{tunnel['id']}"))[0] == 204
    assert tunnel["id"] == "2"


async def test_explicit_local_ports(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    await connect_client(server)
    port = free_pool_port(server)
    tunnel = await create(api, local=str(port), remote=str(echo_port))
    assert (tunnel["lhost"], tunnel["lport"], tunnel["lport_random"]) == (
        "0.0.0.0",
        str(port),
        False,
    )
    assert await echo_through(port, b"fixed") == b"fixed"

    async def refused(**params: str) -> tuple[int, str, str]:
        status, body = await api.put("/clients/c1/tunnels", params=params)
        error = body["errors"][0]
        return status, error["code"], error["title"]

    assert await refused(local=str(port), remote=str(echo_port)) == (
        400,
        "ERR_CODE_TUNNEL_EXIST",
        "Tunnel already exist.",
    )
    assert await refused(local=str(port), remote=f"localhost:{echo_port}") == (
        400,
        "ERR_CODE_LOCAL_PORT_IN_USE",
        f"Port {port} already in use.",
    )
    other = free_pool_port(server)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", other))
        busy.listen()
        assert await refused(local=str(other), remote=f"localhost:{echo_port}") == (
            400,
            "ERR_CODE_LOCAL_PORT_IN_USE",
            f"Port {other} already in use.",
        )
    # Upstream checks an existing tunnel to the same remote before the allowed ports.
    outside = free_port_outside_pool(server)
    assert await refused(local=str(outside), remote=str(echo_port)) == (
        400,
        "ERR_CODE_TUNNEL_TO_PORT_EXIST",
        f"Tunnel to port {echo_port} already exists.",
    )
    assert await refused(local=str(outside), remote=f"localhost:{echo_port}") == (
        400,
        "",
        f"Local port {outside} is not among allowed ports.",
    )
    tunnel = await create(api, local=f"127.0.0.1:{other}", remote=f"localhost:{echo_port}")
    assert tunnel["lhost"] == "127.0.0.1"
    assert await echo_through(other, b"loopback") == b"loopback"


async def test_port_pool_exhaustion(
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    echo_port: int,
) -> None:
    probe = await make_server("probe")
    first, second = free_pool_port(probe), 0
    for candidate in sorted(probe.tunnels.ports.allowed, reverse=True):
        if candidate != first and port_bindable(candidate) and port_bindable(candidate, True):
            second = candidate
            break
    server = await make_server(server={"used_ports": [str(first), str(second)]})
    api = Api(http, api_base(server), ADMIN)
    await connect_client(server)
    ports = set()
    for acl in ("127.0.0.1", "127.0.0.2"):
        ports.add(int(str((await create(api, remote=str(echo_port), acl=acl))["lport"])))
    assert ports == {first, second}
    status, body = await api.put(
        "/clients/c1/tunnels", params={"remote": str(echo_port), "acl": "127.0.0.3"}
    )
    assert (status, body["errors"][0]["title"]) == (409, "no ports available")
    # Closing one tunnel gives its port back to the pool.
    tunnel_id = server.tunnels.running[0][1].id
    assert (await api.delete(f"/clients/c1/tunnels/{tunnel_id}"))[0] == 204
    await create(api, remote=str(echo_port), acl="127.0.0.3")
