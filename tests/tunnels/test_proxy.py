"""The HTTPS tunnel proxy: TLS with the configured certificate, basic auth, Host, ACL."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rportd.app import RportServer
from tests.conftest import ADMIN, Api, ServerFactory, api_base
from tests.tunnels.conftest import ConnectClient, eventually, port_bindable


def self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "proxy.crt", directory / "proxy.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def _page(request: web.Request) -> web.Response:
    forwarded_for = request.headers.get("X-Forwarded-For")
    return web.Response(text=f"page {request.path_qs} host={request.host} xff={forwarded_for}")


async def _upload(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body[::-1], headers={"X-Length": str(len(body))})


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        await ws.send_str("ws:" + msg.data)
    return ws


@pytest.fixture
async def web_port() -> AsyncIterator[int]:
    """A small web application on 127.0.0.1 (the tunnel's destination)."""
    app = web.Application()
    app.router.add_get("/ws", _ws)
    app.router.add_post("/upload", _upload)
    app.router.add_get("/{tail:.*}", _page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


@pytest.fixture
async def proxy_server(tmp_path: Path, make_server: ServerFactory) -> RportServer:
    cert, key = self_signed(tmp_path)
    return await make_server(server={"tunnel_proxy_cert_file": cert, "tunnel_proxy_key_file": key})


def tls_client(maximum: ssl.TLSVersion | None = None) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))


async def test_https_proxy_with_basic_auth_and_host_header(
    proxy_server: RportServer,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    web_port: int,
) -> None:
    server = proxy_server
    api = Api(http, api_base(server), ADMIN)
    await connect_client(server)
    status, body = await api.put(
        "/clients/c1/tunnels",
        params={
            "remote": str(web_port),
            "scheme": "http",
            "http_proxy": "true",
            "host_header": "internal.example",
            "auth_user": "alice",
            "auth_password": "s3cret",
        },
    )
    assert status == 200, body
    tunnel = body["data"]
    assert tunnel["http_proxy"] is True and tunnel["lport_random"] is True
    assert (tunnel["auth_user"], tunnel["auth_password"]) == ("alice", "s3cret")
    port = int(tunnel["lport"])
    ((_, running),) = server.tunnels.running
    assert running.runtime is not None and running.runtime.tcp is not None
    inner = running.runtime.tcp.port
    assert running.runtime.tcp.host == "127.0.0.1" and inner != port
    url = f"https://127.0.0.1:{port}"

    async with tls_client() as browser:
        async with browser.get(url + "/") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="restricted", charset="UTF-8"'
        wrong = {"Authorization": aiohttp.encode_basic_auth("alice", "nope")}
        async with browser.get(url + "/", headers=wrong) as resp:
            assert resp.status == 401
        auth = {"Authorization": aiohttp.encode_basic_auth("alice", "s3cret")}
        async with browser.get(url + "/some/page?x=1", headers=auth) as resp:
            assert resp.status == 200
            assert await resp.text() == "page /some/page?x=1 host=internal.example xff=127.0.0.1"
        payload = bytes(range(256)) * 4096
        async with browser.post(url + "/upload", data=payload, headers=auth) as resp:
            assert resp.status == 200 and resp.headers["X-Length"] == str(len(payload))
            assert await resp.read() == payload[::-1]
        async with browser.ws_connect(url + "/ws", headers=auth) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "ws:hello"

    # Plain HTTP is not served, and TLS below the configured minimum (1.3) is refused.
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            await plain.get(f"http://127.0.0.1:{port}/")
    async with tls_client(ssl.TLSVersion.TLSv1_2) as old:
        with pytest.raises(aiohttp.ClientError):
            await old.get(url + "/")
    # The real tunnel only takes connections from the proxy's host.
    reader, writer = await asyncio.open_connection("127.0.0.1", inner)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert b"page /" in await asyncio.wait_for(reader.read(), 5)
    writer.close()

    # The tunnel's ACL applies to the proxy.
    status, _ = await api.put(f"/clients/c1/tunnels/{tunnel['id']}/acl", json={"acl": "10.0.0.1"})
    assert status == 204
    async with tls_client() as browser, browser.get(url + "/", headers=auth) as resp:
        assert resp.status == 403
        assert await resp.text() == "[403] Rport tunnel proxy: Access rejected by ACL"

    status, _ = await api.delete(f"/clients/c1/tunnels/{tunnel['id']}")
    assert status == 204
    await eventually(lambda: port_bindable(port) and port_bindable(inner))
    assert not server.tunnels.ports.in_use


async def test_proxy_refusals(
    proxy_server: RportServer, http: aiohttp.ClientSession, connect_client: ConnectClient
) -> None:
    api = Api(http, api_base(proxy_server), ADMIN)
    await connect_client(proxy_server)
    cases = [
        ({"scheme": "ssh"}, "tunnel proxy not allowed with scheme ssh"),
        ({"protocol": "udp"}, "tunnel proxy not allowed with protcol udp"),
        ({"auth_user": "bob"}, "auth_user requires auth_password"),
        ({"auth_password": "pw"}, "auth_password requires auth_user"),
    ]
    for extra, title in cases:
        params = {"remote": "80", "http_proxy": "1", "check_port": "0", **extra}
        status, body = await api.put("/clients/c1/tunnels", params=params)
        assert (status, body["errors"][0]["title"]) == (400, title)
    status, body = await api.put(
        "/clients/c1/tunnels", params={"remote": "80", "http_proxy": "maybe"}
    )
    assert status == 400


async def test_vnc_websocket_bridge_and_rdp_refusal(
    proxy_server: RportServer,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    echo_port: int,
) -> None:
    api = Api(http, api_base(proxy_server), ADMIN)
    await connect_client(proxy_server)
    status, body = await api.put(
        "/clients/c1/tunnels",
        params={"remote": str(echo_port), "scheme": "vnc", "http_proxy": "true"},
    )
    assert status == 200, body
    url = f"https://127.0.0.1:{body['data']['lport']}"
    async with tls_client() as browser:
        async with browser.ws_connect(url + "/vnc", protocols=("binary",)) as ws:
            assert ws.protocol == "binary"
            await ws.send_bytes(b"RFB 003.008\n")
            assert (await ws.receive(timeout=5)).data == b"RFB 003.008\n"
        async with browser.get(url + "/") as resp:
            assert resp.status == 404
    status, body = await api.put(
        "/clients/c1/tunnels",
        params={
            "remote": f"localhost:{echo_port}",
            "scheme": "rdp",
            "http_proxy": "true",
        },
    )
    assert status == 200, body
    async with (
        tls_client() as browser,
        browser.get(f"https://127.0.0.1:{body['data']['lport']}/") as resp,
    ):
        assert resp.status == 501
