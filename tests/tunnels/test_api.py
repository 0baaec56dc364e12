"""``PUT /clients/{id}/tunnels`` refusals: upstream's statuses, titles, codes and order."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rportd.app import RportServer
from tests.access.conftest import db_sections, make_users_db
from tests.conftest import Api, ServerFactory, api_base
from tests.dbservers import sqlite_database
from tests.tunnels.conftest import ConnectClient


def first_error(body: Any) -> tuple[str, str, str]:
    error = body["errors"][0]
    return error["code"], error["title"], error["detail"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"remote": "a:b:c:d:e"}, ("", 'failed to decode "a:b:c:d:e": Invalid remote', "")),
        ({"remote": "host"}, ("", 'failed to decode "host": Missing ports', "")),
        (
            {"remote": "22", "protocol": "sctp"},
            ("", 'failed to decode "22/sctp": Missing ports', ""),
        ),
        (
            {"remote": "22", "scheme": "x" * 16},
            ("ERR_CODE_URI_SCHEME_LENGTH_EXCEED", "Invalid URI scheme.", "Exceeds the max length."),
        ),
        ({"remote": "22", "http_proxy": "true"}, ("", "creation of tunnel proxy not enabled", "")),
        (
            {"remote": "22", "host_header": "example.com"},
            ("", "host_header not allowed when http_proxy is false", ""),
        ),
        (
            {"remote": "22", "auth_user": "u", "auth_password": "p"},
            (
                "",
                "http basic authentication requires http_proxy to be activated on the "
                "requested tunnel",
                "",
            ),
        ),
        (
            {"remote": "22", "idle-timeout-minutes": "abc"},
            ("", "invalid idle timeout param", 'strconv.Atoi: parsing "abc": invalid syntax'),
        ),
        (
            {"remote": "22", "idle-timeout-minutes": "10081"},
            ("", "idle timeoout param should be in range [0,604800000000000]", ""),
        ),
        (
            {"remote": "22", "auto-close": "soon"},
            ("", "invalid tunnel auto-close format", 'time: invalid duration "soon"'),
        ),
        (
            {"remote": "22", "auto-close": "745h"},
            ("", "tunnel auto-close value should not be more than 744h0m0s", ""),
        ),
        (
            {"remote": "22", "acl": "0.0.0.0"},
            (
                "ERR_CODE_INVALID_ACL",
                "Invalid ACL: 0.0.0.0 would allow access to everyone. If that's what you want, "
                "do not set the ACL",
                "",
            ),
        ),
        (
            {"remote": "22", "acl": "10.0.0.300"},
            ("ERR_CODE_INVALID_ACL", "Invalid ACL: invalid IP addr: 10.0.0.300", ""),
        ),
    ],
)
async def test_bad_requests(
    server: RportServer,
    api: Api,
    connect_client: ConnectClient,
    params: dict[str, str],
    expected: tuple[str, str, str],
) -> None:
    await connect_client(server)
    status, body = await api.put("/clients/c1/tunnels", params=params)
    assert (status, first_error(body)) == (400, expected)
    assert not server.tunnels.running


async def test_remote_port_must_listen_unless_check_port_is_0(
    server: RportServer, api: Api, connect_client: ConnectClient
) -> None:
    await connect_client(server)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    status, body = await api.put("/clients/c1/tunnels", params={"remote": str(closed_port)})
    code, title, detail = first_error(body)
    assert (status, code, title) == (
        400,
        "ERR_CODE_REMOTE_PORT_NOT_OPEN",
        f"Port {closed_port} is not in listening state.",
    )
    assert "connection refused" in detail
    status, body = await api.put(
        "/clients/c1/tunnels", params={"remote": str(closed_port), "check_port": "0"}
    )
    assert status == 200, body
    # UDP is never checked, and a UDP tunnel to the same port is another tunnel...
    status, body = await api.put(
        "/clients/c1/tunnels", params={"remote": str(closed_port), "protocol": "udp"}
    )
    assert status == 200, body
    # ...but tcp+udp overlaps both.
    status, body = await api.put(
        "/clients/c1/tunnels",
        params={"remote": str(closed_port), "protocol": "tcp+udp", "check_port": "0"},
    )
    assert (status, first_error(body)) == (
        400,
        ("ERR_CODE_TUNNEL_TO_PORT_EXIST", f"Tunnel to port {closed_port} already exists.", ""),
    )


async def test_client_tunnel_allowed_config_is_respected(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    sim = await connect_client(server, tunnel_allowed=["127.0.0.1:1"])
    status, body = await api.put("/clients/c1/tunnels", params={"remote": str(echo_port)})
    assert (status, first_error(body)) == (
        400,
        ("", "Tunnel destination is not allowed by client configuration.", ""),
    )
    assert sim.tunnel_requests == []


async def test_unknown_and_disconnected_clients(
    server: RportServer, api: Api, connect_client: ConnectClient, echo_port: int
) -> None:
    status, body = await api.put("/clients/nope/tunnels", params={"remote": "22"})
    assert (status, first_error(body)[1]) == (404, 'Client with id="nope" not found.')
    sim = await connect_client(server)
    await sim.stop()
    for method, path in [
        ("PUT", "/clients/c1/tunnels"),
        ("DELETE", "/clients/c1/tunnels/1"),
        ("PUT", "/clients/c1/tunnels/1/acl"),
    ]:
        status, body = await api.request(method, path, params={"remote": "22"}, json={})
        assert (status, first_error(body)[1]) == (404, "client with id c1 not found"), path


async def test_tunnels_permission_and_client_access(
    tmp_path: Path,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    connect_client: ConnectClient,
    echo_port: int,
) -> None:
    users = [("ops", "pw", ["operators"]), ("tun", "pw", ["tunnelers"])]
    db = await make_users_db(
        sqlite_database(tmp_path),
        users,
        {"operators": {"commands": True}, "tunnelers": {"tunnels": True}},
    )
    server = await make_server(**db_sections(db))
    base = Api(http, api_base(server), None)
    ops, tun = base.as_user("ops", "pw"), base.as_user("tun", "pw")
    await connect_client(server)
    params = {"remote": str(echo_port)}
    status, body = await tun.put("/clients/c1/tunnels", params=params)
    assert (status, first_error(body)[1]) == (403, "Access denied to client(s) with ID(s): c1")
    client = server.clients.registry.get("c1")
    assert client is not None
    client.allowed_user_groups = ["operators", "tunnelers"]
    status, body = await ops.put("/clients/c1/tunnels", params=params)
    assert (status, first_error(body)[1]) == (403, 'user does not have "tunnels" permission')
    status, body = await ops.get("/tunnels")
    assert (status, first_error(body)[1]) == (403, 'user does not have "tunnels" permission')
    status, body = await tun.put("/clients/c1/tunnels", params=params)
    assert status == 200 and body["data"]["owner"] == "tun"
    status, body = await tun.get("/tunnels")
    assert [t["client_id"] for t in body["data"]] == ["c1"]
    client.allowed_user_groups = ["operators"]
    status, body = await tun.get("/tunnels")
    assert (status, body) == (200, {"data": []})
