"""Malformed and unwelcome request bodies: a 4xx with the JSON error envelope, a line in the
log at most, and no account left without an administrator (issue items 6-8)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.hostile.conftest import ADMIN, HOSTILE_IP, ServerFactory, ServerProcess, open_from

DEEP = b"[" * 5000 + b"]" * 5000  # well inside max_request_bytes (10240)


def admin_headers(content_type: str = "application/json") -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(*ADMIN), "Content-Type": content_type}


async def call(
    server: ServerProcess, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.api_base + path, data=body, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def assert_envelope(status: int, body: Any, expected_status: int = 400) -> None:
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and body["errors"][0]["title"], body


async def test_malformed_bodies_get_a_4xx_envelope(make_rportd: ServerFactory) -> None:
    server = await make_rportd()
    # Deep nesting, without any credentials and with.
    assert_envelope(
        *await call(server, "POST", "/login", DEEP, admin_headers() | {"Authorization": ""})
    )
    for path in ("/users", "/library/commands", "/client-groups", "/me/tokens"):
        assert_envelope(*await call(server, "POST", path, DEEP, admin_headers()))
    # A lone surrogate.
    lone = b'{"name": "\\ud800", "cmd": "ls"}'
    assert_envelope(*await call(server, "POST", "/library/commands", lone, admin_headers()))
    lone_user = b'{"username": "\\ud800x", "password": "a-long-password-123"}'
    assert_envelope(*await call(server, "POST", "/users", lone_user, admin_headers()))
    # A control byte in a multipart part header.
    form = b'--b\r\nContent-Disposition: form-data; name="dest"\r\nX-A: \x01\r\n\r\nx\r\n--b--\r\n'
    headers = admin_headers("multipart/form-data; boundary=b")
    assert_envelope(*await call(server, "POST", "/files", form, headers))
    # Too large.
    status, body = await call(server, "POST", "/users", b"x" * 20000, admin_headers())
    assert_envelope(status, body)
    assert "10240" in body["errors"][0]["detail"]
    log = "\n".join(server.log_lines())
    assert "Traceback" not in log


async def test_json_needs_a_json_content_type(make_rportd: ServerFactory) -> None:
    server = await make_rportd()
    body = json.dumps({"username": "mallory", "password": "a-long-password-123"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        status, answer = await call(server, "POST", "/users", body, admin_headers(content_type))
        assert_envelope(status, answer, 415)
    status, answer = await call(server, "GET", "/users", None, admin_headers())
    assert status == 200
    assert "mallory" not in [user["username"] for user in answer["data"]]
    # What the web UI and rportcli send still works.
    status, _ = await call(server, "POST", "/users", body, admin_headers())
    assert status == 201


async def test_me_and_last_administrator(make_rportd: ServerFactory) -> None:
    server = await make_rportd()
    wrong = json.dumps({"username": "renamed", "old_password": "not-it"}).encode()
    status, body = await call(server, "PUT", "/me", wrong, admin_headers())
    assert_envelope(status, body, 403)
    assert (await call(server, "GET", "/me", None, admin_headers()))[0] == 200  # still "admin"
    empty = json.dumps({"groups": []}).encode()
    status, body = await call(server, "PUT", "/users/admin", empty, admin_headers())
    assert_envelope(status, body)
    assert "last member of Administrators" in body["errors"][0]["title"]
    status, body = await call(server, "GET", "/me", None, admin_headers())
    assert body["data"]["groups"] == ["Administrators"]
    # With a second administrator, the first may leave the group.
    promote = json.dumps({"groups": ["Administrators"]}).encode()
    assert (await call(server, "PUT", "/users/root2", promote, admin_headers()))[0] == 204
    assert (await call(server, "PUT", "/users/admin", empty, admin_headers()))[0] == 204


async def test_client_mistakes_log_a_line_at_most(make_rportd: ServerFactory) -> None:
    server = await make_rportd()
    before = len(server.log_lines())
    events = 0
    for port in (server.client_port, server.api_port):
        for _ in range(10):  # malformed HTTP
            reader, writer = await open_from(HOSTILE_IP, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\x02\r\n\r\n")
            await reader.read()
            writer.close()
            events += 1
        for _ in range(10):  # aborted in the middle of a body
            reader, writer = await open_from(HOSTILE_IP, port)
            writer.write(
                b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 5000\r\n\r\n{"user'
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()
            events += 1
    for _ in range(10):  # deep JSON
        await call(server, "POST", "/login", DEEP, {"Content-Type": "application/json"})
        events += 1
    await asyncio.sleep(0.5)
    added = server.log_lines()[before:]
    assert not [line for line in added if "Traceback" in line], "\n".join(added)
    assert len(added) <= events, f"{len(added)} log lines for {events} client mistakes"
