"""Sending 2FA codes (``[api] two_fa_token_delivery``): a script, a URL, SMTP or Pushover."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import smtplib
import ssl
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.message import EmailMessage

import aiohttp

from rportd.config.model import ApiConfig, PushoverConfig, SmtpConfig

TITLE = "🔐 RPort Two-Factor Token"
STDERR_LIMIT = 1024
PUSHOVER_API = "https://api.pushover.net/1"

_EMAIL = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


class DeliveryFailed(Exception):
    """The code could not be delivered; the message says why."""


def check_email(address: str) -> None:
    """Raise ``ValueError`` unless ``address`` looks like an email address (upstream's rule)."""
    if not address:
        raise ValueError("email cannot be empty")
    if not _EMAIL.match(address):
        raise ValueError("invalid email format")


@dataclass(frozen=True)
class CodeMessage:
    """What a delivery sends."""

    send_to: str
    code: str
    ttl_seconds: int
    user_agent: str
    remote_address: str
    title: str = TITLE


class CodeSender(ABC):
    """One way of delivering 2FA codes."""

    delivery_method: str

    @abstractmethod
    async def send(self, message: CodeMessage) -> None:
        """Deliver ``message``; raise :class:`DeliveryFailed` on failure."""

    async def validate_receiver(self, send_to: str) -> None:
        """Raise ``ValueError`` if ``send_to`` cannot receive codes."""
        check_email(send_to)


class ScriptSender(CodeSender):
    """Runs an executable with the code in ``RPORT_2FA_*`` environment variables."""

    delivery_method = "script"

    def __init__(self, script: str, send_to_type: str = "none", send_to_regex: str = "") -> None:
        self.script = script
        self.send_to_type = send_to_type
        self.regex = re.compile(send_to_regex) if send_to_type == "regex" else None

    def environment(self, message: CodeMessage) -> dict[str, str]:
        return {
            **os.environ,
            "RPORT_2FA_TOKEN": message.code,
            "RPORT_2FA_SENDTO": message.send_to,
            "RPORT_2FA_TOKEN_TTL": str(message.ttl_seconds),
            "RPORT_2FA_USER_AGENT": message.user_agent,
            "RPORT_2FA_REMOTE_ADDRESS": message.remote_address,
        }

    async def send(self, message: CodeMessage) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.script,
                env=self.environment(message),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise DeliveryFailed(str(exc)) from None
        try:
            _, stderr = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            text = f"exit status {proc.returncode}"
            if stderr:
                text += " " + stderr[:STDERR_LIMIT].decode(errors="replace").strip()
            raise DeliveryFailed(text)

    async def validate_receiver(self, send_to: str) -> None:
        if self.send_to_type == "email":
            check_email(send_to)
        elif self.regex is not None and not self.regex.search(send_to):
            raise ValueError(f'does not match "{self.regex.pattern}"')


class UrlSender(CodeSender):
    """POSTs a form (``email, token, ttl, user_agent, remote_address, url``) to a URL."""

    delivery_method = "url"

    def __init__(self, url: str, base_url: str) -> None:
        self.url = url
        self.base_url = base_url

    async def send(self, message: CodeMessage) -> None:
        form = {
            "email": message.send_to,
            "token": message.code,
            "ttl": str(message.ttl_seconds),
            "user_agent": message.user_agent,
            "remote_address": message.remote_address,
            "url": self.base_url,
        }
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(self.url, data=form) as resp,
            ):
                if resp.status // 100 != 2:
                    raise DeliveryFailed(f"{resp.status} {resp.reason or ''}".strip())
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(str(exc) or type(exc).__name__) from None


class SmtpSender(CodeSender):
    """Sends an email through ``[smtp]`` (TLS when ``secure``, else STARTTLS if offered)."""

    delivery_method = "email"

    def __init__(self, cfg: SmtpConfig, timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout

    def _send(self, message: CodeMessage) -> None:
        host, _, port = self.cfg.server.rpartition(":")
        mail = EmailMessage()
        mail["From"] = self.cfg.sender_email
        mail["To"] = message.send_to
        mail["Subject"] = message.title
        mail.set_content(
            "You have requested a token for the login to your RPort server.\n"
            f"The token is: {message.code}\n\n"
            f"The token has been requested from {message.remote_address}\n"
            f"with user agent {message.user_agent}.\n"
            f"Token is valid for {message.ttl_seconds} seconds."
        )
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.cfg.secure:
            smtp = smtplib.SMTP_SSL(host, int(port), timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, int(port), timeout=self.timeout)
        with smtp:
            if not self.cfg.secure:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
            if self.cfg.auth_username or self.cfg.auth_password:
                smtp.login(self.cfg.auth_username, self.cfg.auth_password)
            smtp.send_message(mail)

    async def send(self, message: CodeMessage) -> None:
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"failed to send email: {exc}") from None


class PushoverSender(CodeSender):
    """Sends a Pushover notification; ``two_fa_send_to`` is the Pushover user key."""

    delivery_method = "pushover"

    def __init__(self, api_token: str, api_base: str = PUSHOVER_API) -> None:
        self.api_token = api_token
        self.api_base = api_base.rstrip("/")

    async def _post(self, path: str, form: dict[str, str]) -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.api_base}{path}", data=form) as resp,
        ):
            if resp.status >= 500:
                raise DeliveryFailed("pushover service unavailable")
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = {}
            return body if isinstance(body, dict) else {}

    async def send(self, message: CodeMessage) -> None:
        text = (
            f"Your RPort 2fa token:<b>{message.code}</b>\n"
            f"requested from {message.remote_address}\n"
            f"<i>with {message.user_agent}</i>\n"
            f"<i>valid for {message.ttl_seconds} seconds</i>."
        )
        form = {
            "token": self.api_token,
            "user": message.send_to,
            "title": message.title,
            "message": text,
            "html": "1",
            "timestamp": str(int(time.time())),
        }
        try:
            body = await self._post("/messages.json", form)
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(str(exc) or type(exc).__name__) from None
        if body.get("status") != 1:
            raise DeliveryFailed(f"failed to send msg, pushover response: {body}")

    async def validate_receiver(self, send_to: str) -> None:
        if not send_to:
            raise ValueError("pushover user key cannot be empty")
        try:
            body = await self._post(
                "/users/validate.json", {"token": self.api_token, "user": send_to}
            )
        except (aiohttp.ClientError, DeliveryFailed) as exc:
            raise ValueError(f"failed to validate pushover user key: {exc}") from None
        if body.get("status") != 1:
            raise ValueError(f"failed to validate user key, pushover response: {body}")


class SenderUnavailable(Exception):
    """``two_fa_token_delivery`` names something that cannot be used."""


def build_sender(api: ApiConfig, smtp: SmtpConfig, pushover: PushoverConfig) -> CodeSender | None:
    """The sender configured by ``[api] two_fa_token_delivery`` (``None`` if off)."""
    delivery = api.two_fa_token_delivery
    if not delivery:
        return None
    if delivery == "smtp":
        return SmtpSender(smtp, api.two_fa_send_timeout)
    if delivery == "pushover":
        return PushoverSender(pushover.api_token)
    if delivery.startswith(("http://", "https://")):
        return UrlSender(delivery, api.base_url)
    path = shutil.which(delivery)
    if path is None:
        raise SenderUnavailable(
            f"[api] two_fa_token_delivery {delivery!r} is neither smtp, pushover, an http(s) URL "
            "nor an executable file: give the full path of an executable script"
        )
    return ScriptSender(path, api.two_fa_send_to_type, api.two_fa_send_to_regex)
