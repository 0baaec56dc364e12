"""``[api] access_log_file``: Apache combined lines, with secrets in query strings redacted."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from tests.conftest import ADMIN, Api, ServerFactory, api_base

LINE = re.compile(
    r"^127\.0\.0\.1 - (?P<user>\S+) \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\S+) "[^"]*" "(?P<agent>[^"]*)"$'
)


async def test_access_log_lines(
    tmp_path: Path, make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    log_file = tmp_path / "access.log"
    server = await make_server(api={"access_log_file": str(log_file)})
    api = Api(http, api_base(server), ADMIN)
    assert (await api.get("/status", headers={"User-Agent": "curl/8"}))[0] == 200
    anonymous = Api(http, api_base(server), None)
    await anonymous.get("/ws/commands", params={"access_token": "secret-jwt", "x": "1"})
    await server.stop()
    for _ in range(50):
        if log_file.exists() and len(log_file.read_text().splitlines()) >= 2:
            break
        await asyncio.sleep(0.05)
    lines = log_file.read_text().splitlines()
    first, second = (LINE.match(line) for line in lines[:2])
    assert first is not None and second is not None, lines
    assert first["user"] == "admin" and first["request"] == "GET /api/v1/status HTTP/1.1"
    assert (first["status"], first["agent"]) == ("200", "curl/8")
    assert "secret-jwt" not in log_file.read_text()
    assert second["request"] == "GET /api/v1/ws/commands?access_token=REDACTED&x=1 HTTP/1.1"
