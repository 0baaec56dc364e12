"""Two-factor login: TOTP authenticator codes and delivered codes (script, URL)."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
from aiohttp import web

from rportd.app import RportServer
from tests.access.conftest import ADMIN_PW, BOB_PW, api_for, write_users_file, y_hash
from tests.conftest import Api, ServerFactory


async def post_login(api: Api, username: str, password: str) -> tuple[int, Any]:
    return await Api(api.session, api.base, None).post(
        "/login", json={"username": username, "password": password}
    )


def stored_users(server: RportServer) -> list[dict[str, Any]]:
    data = json.loads(Path(server.config.api.auth_file).read_text())
    assert isinstance(data, list)
    return data


def users_with(path: Path, **admin_extra: Any) -> Path:
    return write_users_file(
        path,
        [
            {
                "username": "admin",
                "password": y_hash(ADMIN_PW),
                "groups": ["Administrators"],
                **admin_extra,
            },
            {"username": "bob", "password": y_hash(BOB_PW), "groups": ["Users"]},
        ],
    )


@pytest.fixture
async def totp_server(tmp_path: Path, make_server: ServerFactory) -> RportServer:
    users = users_with(tmp_path / "users.json")
    return await make_server(
        api={
            "auth": None,
            "auth_file": str(users),
            "totp_enabled": True,
            "totp_account_name": "acme",
        }
    )


async def test_totp_enrolment_and_login(
    totp_server: RportServer, http: aiohttp.ClientSession
) -> None:
    api = api_for(totp_server, http, "admin", ADMIN_PW)
    status, body = await api.get("/me")
    assert status == 401  # passwords no longer work with basic auth

    status, body = await post_login(api, "admin", ADMIN_PW)
    assert status == 200
    assert body["data"]["two_fa"] == {
        "send_to": "",
        "delivery_method": "totp_authenticator_app",
        "totp_key_status": "pending",
    }
    pending = api.with_token(body["data"]["token"])
    assert (await pending.get("/me"))[0] == 401

    status, secret = await pending.post("/me/totp-secret")
    assert status == 200 and set(secret) == {"secret", "qr"}  # bare, not in "data"
    png = base64.b64decode(secret["qr"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    stored = stored_users(totp_server)[0]["totp_secret"]
    assert stored.startswith("otpauth://totp/admin:acme?")
    assert f"secret={secret['secret']}" in stored and "algorithm=SHA1" in stored
    status, body = await pending.post("/me/totp-secret")
    assert status == 409
    assert body["errors"][0]["title"] == (
        "cannot create new totP secret when another one already exists"
    )

    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": "000000"})
    assert status == 401 and body["errors"][0]["title"] == "invalid code"
    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": ""})
    assert status == 401 and body["errors"][0]["title"] == "token is required"
    status, body = await pending.post("/verify-2fa", json={"token": "1"})
    assert status == 401 and body["errors"][0]["title"] == "username is required"
    status, body = await pending.post("/verify-2fa", json={"username": "bob", "token": "123456"})
    assert status == 403 and body["errors"][0]["title"] == "access denied"

    code = pyotp.TOTP(secret["secret"]).now()
    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": code})
    assert status == 200 and body["data"]["two_fa"] is None
    full = api.with_token(body["data"]["token"])
    status, body = await full.get("/me")
    assert status == 200 and body["data"]["username"] == "admin"
    assert (await full.post("/verify-2fa", json={"username": "admin", "token": code}))[0] == 401
    assert (await pending.get("/me"))[0] == 401

    status, body = await full.get("/me/totp-secret")
    assert status == 200 and body["secret"] == secret["secret"]

    # Next login: the key exists, so the pending token cannot create another one.
    status, body = await post_login(api, "admin", ADMIN_PW)
    assert body["data"]["two_fa"]["totp_key_status"] == "exists"
    pending = api.with_token(body["data"]["token"])
    assert (await pending.post("/me/totp-secret"))[0] == 401
    code = pyotp.TOTP(secret["secret"]).now()
    assert (await pending.post("/verify-2fa", json={"username": "admin", "token": code}))[0] == 200
    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": code})
    assert status == 401

    # An admin resets it: the next login enrols again.
    assert await full.delete("/users/admin/totp-secret") == (204, None)
    status, body = await post_login(api, "admin", ADMIN_PW)
    assert body["data"]["two_fa"]["totp_key_status"] == "pending"
    status, body = await full.delete("/users/nobody/totp-secret")
    assert status == 404 and body["errors"][0]["title"] == "user not found"


async def test_totp_requires_key_and_login(
    totp_server: RportServer, http: aiohttp.ClientSession
) -> None:
    api = api_for(totp_server, http, "bob", BOB_PW)
    status, body = await post_login(api, "bob", BOB_PW)
    pending = api.with_token(body["data"]["token"])
    status, body = await pending.post("/verify-2fa", json={"username": "bob", "token": "123456"})
    assert status == 409
    assert body["errors"][0]["title"] == (
        "time based one time secret key should be generated for this user"
    )
    assert totp_server.two_fa is not None
    totp_server.two_fa._pending.clear()  # the login session is gone (e.g. other node)
    status, body = await pending.post("/verify-2fa", json={"username": "bob", "token": "123456"})
    assert status == 401
    assert body["errors"][0]["title"] == "login request not found for provided username"


async def test_totp_disabled(admin: Api) -> None:
    for call in (admin.get("/me/totp-secret"), admin.delete("/users/bob/totp-secret")):
        status, body = await call
        assert status == 400 and body["errors"][0]["title"] == "TotP is disabled"


SCRIPT = """#!/bin/sh
if [ "$RPORT_2FA_SENDTO" = "broken@example.com" ]; then
  echo "no route to mailbox" >&2
  exit 3
fi
printf '%s\\n%s\\n%s\\n%s\\n%s\\n' "$RPORT_2FA_TOKEN" "$RPORT_2FA_SENDTO" "$RPORT_2FA_TOKEN_TTL" \
  "$RPORT_2FA_USER_AGENT" "$RPORT_2FA_REMOTE_ADDRESS" > "{out}"
"""


async def test_script_delivery(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    out = tmp_path / "code.txt"
    script = tmp_path / "send-2fa.sh"
    script.write_text(SCRIPT.replace("{out}", str(out)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    users = users_with(tmp_path / "users.json", two_fa_send_to="admin@example.com")
    server = await make_server(
        api={
            "auth": None,
            "auth_file": str(users),
            "two_fa_token_delivery": str(script),
            "two_fa_send_to_type": "email",
            "two_fa_token_ttl_seconds": 300,
        }
    )
    api = api_for(server, http, "admin", ADMIN_PW)
    status, body = await api.get("/status")
    assert status == 401  # basic auth with a password is off with 2FA

    status, body = await post_login(api, "admin", ADMIN_PW)
    assert status == 200
    assert body["data"]["two_fa"] == {
        "send_to": "admin@example.com",
        "delivery_method": "script",
        "totp_key_status": "",
    }
    code, send_to, ttl, _agent, address = out.read_text().splitlines()
    assert len(code) == 6 and code.isalnum()
    assert (send_to, ttl, address) == ("admin@example.com", "300", "127.0.0.1")
    pending = api.with_token(body["data"]["token"])
    assert (await pending.get("/status"))[0] == 401

    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": "zzzzzz"})
    assert status == 401 and body["errors"][0]["title"] == "invalid token"
    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": code})
    assert status == 200
    full = api.with_token(body["data"]["token"])
    status, body = await full.get("/status")
    assert body["data"]["two_fa_enabled"] is True
    assert body["data"]["two_fa_delivery_method"] == "script"
    # A code works once.
    status, body = await pending.post("/verify-2fa", json={"username": "admin", "token": code})
    assert status == 401

    status, body = await post_login(api, "bob", BOB_PW)
    assert status == 400 and body["errors"][0]["title"] == "no two_fa_send_to set for this user"

    status, body = await full.post("/users", json={"username": "carl", "password": "p" * 20})
    assert status == 400 and body["errors"][0]["title"] == "two_fa_send_to is required"
    status, body = await full.post(
        "/users", json={"username": "carl", "password": "p" * 20, "two_fa_send_to": "nope"}
    )
    assert status == 400
    assert body["errors"][0]["title"] == "invalid two_fa_send_to: invalid email format"
    status, _ = await full.post(
        "/users",
        json={"username": "carl", "password": "p" * 20, "two_fa_send_to": "broken@example.com"},
    )
    assert status == 201
    status, body = await post_login(api, "carl", "p" * 20)
    assert status == 500
    assert body["errors"][0]["title"] == (
        "failed to send 2fa verification code: exit status 3 no route to mailbox"
    )


@pytest.fixture
async def code_receiver() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A local HTTP endpoint that records the forms it receives."""
    received: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        received.append({k: str(v) for k, v in form.items()})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/2fa", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/2fa", received
    await runner.cleanup()


async def test_url_delivery(
    tmp_path: Path,
    make_server: ServerFactory,
    http: aiohttp.ClientSession,
    code_receiver: tuple[str, list[dict[str, str]]],
) -> None:
    url, received = code_receiver
    users = users_with(tmp_path / "users.json", two_fa_send_to="admin@example.com")
    server = await make_server(
        api={
            "auth": None,
            "auth_file": str(users),
            "two_fa_token_delivery": url,
            "base_url": "https://rport.example.com",
        }
    )
    api = api_for(server, http, "admin", ADMIN_PW)
    status, body = await post_login(api, "admin", ADMIN_PW)
    assert status == 200 and body["data"]["two_fa"]["delivery_method"] == "url"
    [form] = received
    assert form["email"] == "admin@example.com" and form["ttl"] == "600"
    assert form["url"] == "https://rport.example.com" and form["remote_address"] == "127.0.0.1"
    pending = api.with_token(body["data"]["token"])
    status, body = await pending.post(
        "/verify-2fa", json={"username": "admin", "token": form["token"]}
    )
    assert status == 200
