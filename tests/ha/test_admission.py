"""The admission checker against small real HTTP servers whose answer the test flips."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from rportd.ha import auth
from tests.ha.admission import AdmissionChecker
from tests.ha.cluster import CLUSTER_SECRET


class FakeNode:
    """Serves ``GET /api/v1/ha/status`` for the tests' admin, saying ``admitting``."""

    def __init__(self) -> None:
        self.admitting = False
        self.hung = False
        self.unhung = asyncio.Event()
        self.body: Callable[[], object] | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def status(self, request: web.Request) -> web.Response:
        try:
            auth.verify(CLUSTER_SECRET, request.headers.get(auth.HEADER), "GET", request.path)
        except auth.ClusterAuthError:
            return web.json_response({"errors": [{"code": "403"}]}, status=403)
        if self.hung:
            await self.unhung.wait()
            return web.json_response({"errors": [{"code": "503"}]}, status=503)
        body = self.body() if self.body else {"data": {"admitting": self.admitting}}
        return web.json_response(body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/ha/status", self.status)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.unhung.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[FakeNode, FakeNode]]:
    a, b = FakeNode(), FakeNode()
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def test_counts_the_time_two_nodes_admit(nodes: tuple[FakeNode, FakeNode]) -> None:
    a, b = nodes
    a.admitting = True
    async with AdmissionChecker({"a": a.url, "b": b.url}) as checker:
        await asyncio.sleep(0.5)
        b.admitting = True
        await asyncio.sleep(0.6)
        a.admitting = False
        await asyncio.sleep(0.5)
    both = checker.both_admitting_seconds
    assert 0.3 <= both <= 0.9, checker.timeline()
    assert len(checker.intervals("a")) == 1
    assert len(checker.intervals("b")) == 1
    (a_start, a_end), (b_start, b_end) = checker.intervals("a")[0], checker.intervals("b")[0]
    assert a_start < b_start < a_end < b_end
    assert abs((a_end - b_start) - both) < 1e-9
    assert "admitting: a, b" in checker.timeline()


async def test_a_hung_or_dead_node_admits_nobody(nodes: tuple[FakeNode, FakeNode]) -> None:
    a, b = nodes
    a.admitting = b.admitting = True
    b.hung = True
    async with AdmissionChecker({"a": a.url, "b": b.url}, answer_timeout=0.1) as checker:
        await asyncio.sleep(0.5)
        await b.stop()
        await asyncio.sleep(0.3)
    assert checker.both_admitting_seconds == 0, checker.timeline()
    assert checker.intervals("b") == []
    assert len(checker.intervals("a")) == 1
    assert len(checker.samples) >= 5
    assert checker.unanswered["a"] == 0
    assert checker.unanswered["b"] == len(checker.samples)
    assert "unanswered: a 0, b " in checker.timeline()


async def test_a_status_without_admitting_is_an_error(nodes: tuple[FakeNode, FakeNode]) -> None:
    a, b = nodes
    a.body = lambda: {"data": {"state": "active"}}
    with pytest.raises(AssertionError, match="no boolean 'admitting'"):
        async with AdmissionChecker({"a": a.url, "b": b.url}):
            await asyncio.sleep(0.3)


async def test_wrong_credentials_count_as_not_admitting(nodes: tuple[FakeNode, FakeNode]) -> None:
    a, b = nodes
    a.admitting = b.admitting = True
    async with AdmissionChecker({"a": a.url, "b": b.url}, secret="wrong-secret") as checker:
        await asyncio.sleep(0.3)
    assert checker.samples and checker.both_admitting_seconds == 0
