"""2FA code senders against local stand-ins: an SMTP server and a Pushover-like API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from aiohttp import web

from rportd.auth.delivery import (
    CodeMessage,
    DeliveryFailed,
    PushoverSender,
    ScriptSender,
    SmtpSender,
)
from rportd.config.model import SmtpConfig

MESSAGE = CodeMessage(
    send_to="alice@example.com",
    code="Ab12Cd",
    ttl_seconds=600,
    user_agent="curl/8",
    remote_address="203.0.113.5",
)


class FakeSmtp:
    """Just enough SMTP (no TLS offered) to receive one message per session."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender, rcpts = "", []

        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say("220 fake ESMTP")
        while line := (await reader.readline()).decode().rstrip("\r\n"):
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                await say("250-fake\r\n250 AUTH PLAIN")
            elif verb == "AUTH":
                self.logins.append(line)
                await say("235 ok")
            elif verb == "MAIL":
                sender = line.split(":", 1)[1].strip(" <>")
                await say("250 ok")
            elif verb == "RCPT":
                rcpts.append(line.split(":", 1)[1].strip(" <>"))
                await say("250 ok")
            elif verb == "DATA":
                await say("354 go on")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    data += await reader.readline()
                self.messages.append((sender, rcpts, data[:-5]))
                await say("250 queued")
            elif verb == "QUIT":
                await say("221 bye")
                break
            else:
                await say("250 ok")
        writer.close()


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[FakeSmtp, int]]:
    fake = FakeSmtp()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield fake, port
    server.close()
    await server.wait_closed()


async def test_smtp_sender(smtp: tuple[FakeSmtp, int]) -> None:
    fake, port = smtp
    cfg = SmtpConfig(
        server=f"127.0.0.1:{port}",
        sender_email="rport@example.com",
        auth_username="mailer",
        auth_password="mail-secret",
    )
    sender = SmtpSender(cfg, timeout=5)
    assert sender.delivery_method == "email"
    await sender.send(MESSAGE)
    [(mail_from, rcpts, data)] = fake.messages
    assert (mail_from, rcpts) == ("rport@example.com", ["alice@example.com"])
    mail = message_from_bytes(data, policy=default_policy)
    assert mail["Subject"] == "🔐 RPort Two-Factor Token"
    body = mail.get_content()
    assert "The token is: Ab12Cd" in body and "203.0.113.5" in body
    assert fake.logins and fake.logins[0].startswith("AUTH PLAIN")
    await sender.validate_receiver("bob@example.org")
    with pytest.raises(ValueError, match="invalid email format"):
        await sender.validate_receiver("bob")


async def test_smtp_unreachable() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    sender = SmtpSender(SmtpConfig(server=f"127.0.0.1:{port}", sender_email="a@b.c"), timeout=2)
    with pytest.raises(DeliveryFailed, match="failed to send email"):
        await sender.send(MESSAGE)


@pytest.fixture
async def pushover() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    async def messages(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        received.append(form)
        ok = form["user"] == "good-user-key"
        return web.json_response({"status": 1 if ok else 0, "errors": [] if ok else ["bad"]})

    async def validate(request: web.Request) -> web.Response:
        form = await request.post()
        return web.json_response({"status": 1 if form["user"] == "good-user-key" else 0})

    app = web.Application()
    app.router.add_post("/1/messages.json", messages)
    app.router.add_post("/1/users/validate.json", validate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/1", received
    await runner.cleanup()


async def test_pushover_sender(pushover: tuple[str, list[dict[str, str]]]) -> None:
    base, received = pushover
    sender = PushoverSender("app-token", api_base=base)
    good = CodeMessage("good-user-key", "Zz99yy", 60, "ua", "198.51.100.1")
    await sender.send(good)
    [form] = received
    assert form["token"] == "app-token" and form["user"] == "good-user-key"
    assert "<b>Zz99yy</b>" in form["message"] and form["html"] == "1"
    with pytest.raises(DeliveryFailed, match="pushover response"):
        await sender.send(CodeMessage("bad-key", "x", 60, "ua", "ip"))
    await sender.validate_receiver("good-user-key")
    with pytest.raises(ValueError, match="failed to validate user key"):
        await sender.validate_receiver("bad-key")
    with pytest.raises(ValueError, match="cannot be empty"):
        await sender.validate_receiver("")


async def test_script_receiver_rules() -> None:
    regex = ScriptSender("/bin/true", "regex", r"^\+49\d+$")
    await regex.validate_receiver("+4917012345")
    with pytest.raises(ValueError, match="does not match"):
        await regex.validate_receiver("alice@example.com")
    await ScriptSender("/bin/true").validate_receiver("anything at all")
    with pytest.raises(DeliveryFailed, match="exit status 1"):
        await ScriptSender("/bin/false").send(MESSAGE)
