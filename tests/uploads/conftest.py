"""Helpers for file push tests: simulated clients, multipart bodies, the results feed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import pytest

from rportd.app import RportServer
from tests.conftest import Api, api_base
from tests.jobs.conftest import SimFactory, sims, start_sim  # noqa: F401  (fixtures)

__all__ = ["Feed", "SimFactory", "form", "push", "wait_settled"]


def form(
    content: bytes | None = b"hello",
    *,
    filename: str = "hello.txt",
    fields: Iterable[tuple[str, str]] = (),
) -> aiohttp.FormData:
    """A ``POST /files`` body: the ``upload`` file part and form values."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        data.add_field(name, value)
    if content is not None:
        data.add_field("upload", content, filename=filename)
    return data


async def push(api: Api, content: bytes | None = b"hello", **values: Any) -> tuple[int, Any]:
    """``POST /files``; list values repeat the field (``client_id=["a", "b"]``)."""
    fields: list[tuple[str, str]] = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            fields.append((name, str(item)))
    return await api.post("/files", data=form(content, fields=fields))


async def wait_settled(server: RportServer, timeout: float = 10.0) -> None:
    """Until no push is in progress."""
    assert server.uploads is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.uploads.in_progress:
        if loop.time() > deadline:
            raise AssertionError("a push is still in progress")
        await asyncio.sleep(0.02)


class Feed:
    """A ``/ws/uploads`` listener."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        assert msg.data.endswith("\n")
        return dict(json.loads(msg.data))

    async def take(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [await self.next(timeout) for _ in range(count)]


async def listen(server: RportServer, api: Api, http: aiohttp.ClientSession) -> AsyncIterator[Feed]:
    status, body = await api.get("/login")
    assert status == 200, body
    url = api_base(server).replace("http://", "ws://") + "/ws/uploads"
    assert server.uploads is not None
    before = server.uploads.feed.subscribers
    async with http.ws_connect(f"{url}?access_token={body['data']['token']}") as ws:
        for _ in range(200):
            if server.uploads.feed.subscribers > before:
                break
            await asyncio.sleep(0.01)
        yield Feed(ws)


@pytest.fixture
async def feed(server: RportServer, api: Api, http: aiohttp.ClientSession) -> AsyncIterator[Feed]:
    """A ``/ws/uploads`` listener, subscribed before the test starts."""
    async for listener in listen(server, api, http):
        yield listener


@pytest.fixture
async def second_feed(
    server: RportServer, api: Api, http: aiohttp.ClientSession, feed: Feed
) -> AsyncIterator[Feed]:
    async for listener in listen(server, api, http):
        yield listener
