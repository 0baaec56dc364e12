"""UDP tunnels: gob-framed datagrams through the simulated client to a real UDP server."""

from __future__ import annotations

import asyncio
from typing import Any

from rportd.app import RportServer
from tests.conftest import Api
from tests.tunnels.conftest import ConnectClient, echo_through, eventually, port_bindable


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


async def udp_socket(port: int) -> tuple[asyncio.DatagramTransport, Collector]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Collector, remote_addr=("127.0.0.1", port)
    )
    return transport, protocol


async def test_udp_echo_for_several_sources(
    server: RportServer, api: Api, connect_client: ConnectClient, udp_echo_port: int
) -> None:
    sim = await connect_client(server)
    status, body = await api.put(
        "/clients/c1/tunnels", params={"remote": str(udp_echo_port), "protocol": "udp"}
    )
    assert status == 200, body
    assert body["data"]["protocol"] == "udp"
    port = int(body["data"]["lport"])
    # The channel is opened when the tunnel starts, before any datagram.
    assert sim.tunnel_requests == [f"127.0.0.1:{udp_echo_port}/udp"]
    sockets = [await udp_socket(port) for _ in range(3)]
    for round_ in range(20):
        for i, (transport, _) in enumerate(sockets):
            transport.sendto(f"source {i} datagram {round_}".encode())
    for i, (transport, collector) in enumerate(sockets):
        got = {await asyncio.wait_for(collector.received.get(), 5) for _ in range(20)}
        assert got == {f"echo:source {i} datagram {r}".encode() for r in range(20)}
        transport.close()
    big = b"z" * 9000
    transport, collector = await udp_socket(port)
    transport.sendto(big)
    assert await asyncio.wait_for(collector.received.get(), 5) == b"echo:" + big
    transport.close()


async def test_udp_acl_drops_datagrams(
    server: RportServer, api: Api, connect_client: ConnectClient, udp_echo_port: int
) -> None:
    await connect_client(server)
    status, body = await api.put(
        "/clients/c1/tunnels",
        params={"remote": str(udp_echo_port), "protocol": "udp", "acl": "10.1.1.1"},
    )
    assert status == 200, body
    port, tunnel_id = int(body["data"]["lport"]), body["data"]["id"]
    transport, collector = await udp_socket(port)
    transport.sendto(b"dropped")
    await asyncio.sleep(0.3)
    assert collector.received.empty()
    status, _ = await api.put(f"/clients/c1/tunnels/{tunnel_id}/acl", json={"acl": "127.0.0.0/8"})
    assert status == 204
    transport.sendto(b"passes")
    assert await asyncio.wait_for(collector.received.get(), 5) == b"echo:passes"
    transport.close()


async def test_tcp_and_udp_on_the_same_port(
    server: RportServer,
    api: Api,
    connect_client: ConnectClient,
    udp_echo_port: int,
) -> None:
    # A TCP echo on the same port number as the UDP echo server.
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    tcp_echo = await asyncio.start_server(echo, "127.0.0.1", udp_echo_port)
    try:
        await connect_client(server)
        status, body = await api.put(
            "/clients/c1/tunnels", params={"remote": str(udp_echo_port), "protocol": "tcp+udp"}
        )
        assert status == 200, body
        port = int(body["data"]["lport"])
        assert await echo_through(port, b"over tcp") == b"over tcp"
        transport, collector = await udp_socket(port)
        transport.sendto(b"over udp")
        assert await asyncio.wait_for(collector.received.get(), 5) == b"echo:over udp"
        transport.close()
        status, _ = await api.delete(f"/clients/c1/tunnels/{body['data']['id']}")
        assert status == 204
        await eventually(lambda: port_bindable(port) and port_bindable(port, udp=True))
    finally:
        tcp_echo.close()
