"""``[ha] synchronous``: the API answers a write once a secondary has stored it, or 503."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.ha.cluster import ADMIN, Cluster, Node

pytestmark = pytest.mark.ha

TIMEOUT = 1.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    cluster.primary.extra = {"ha": {"synchronous": True, "synchronous_timeout": f"{TIMEOUT}s"}}
    try:
        await cluster.start()
        yield cluster
    finally:
        process = cluster.secondary.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGCONT)
        await cluster.close()


async def add_credential(node: Node, auth_id: str) -> tuple[int, object, float]:
    started = time.monotonic()
    status, body = await node.api(
        "POST", "/clients-auth", json={"id": auth_id, "password": f"pw-of-{auth_id}"}
    )
    return status, body, time.monotonic() - started


async def credential(node: Node, auth_id: str) -> int:
    status, _ = await node.api("GET", f"/clients-auth/{auth_id}")
    return status


async def test_write_is_on_the_secondary_when_the_api_answers(cluster: Cluster) -> None:
    for i in range(5):
        status, body, _ = await add_credential(cluster.primary, f"sync-{i}")
        assert status == 201, body
        # No waiting: the secondary had it stored before the primary answered.
        assert await credential(cluster.secondary, f"sync-{i}") == 200


async def test_write_fails_with_503_when_the_secondary_is_stopped(cluster: Cluster) -> None:
    secondary = cluster.secondary
    assert secondary.process is not None
    secondary.process.send_signal(signal.SIGSTOP)
    status, body, took = await add_credential(cluster.primary, "while-stopped")
    assert status == 503, body
    assert TIMEOUT <= took < TIMEOUT + 1.5
    assert isinstance(body, dict)
    title = body["errors"][0]["title"]
    assert "stored on this primary" in title and "within 1s" in title
    assert "synchronous_timeout" in title and "has stored changes up to" in title
    # Stored on the primary as the error says, and on the secondary once it runs again.
    assert await credential(cluster.primary, "while-stopped") == 200
    secondary.process.send_signal(signal.SIGCONT)
    for _ in range(100):
        if await credential(secondary, "while-stopped") == 200:
            break
        await asyncio.sleep(0.05)
    assert await credential(secondary, "while-stopped") == 200
    status, body, _ = await add_credential(cluster.primary, "after-resume")
    assert status == 201, body


async def test_write_fails_with_503_without_any_secondary(cluster: Cluster) -> None:
    cluster.secondary.kill()
    await cluster.secondary.wait_exit()
    status, body, took = await add_credential(cluster.primary, "alone")
    assert status == 503, body
    assert TIMEOUT <= took < TIMEOUT + 1.5
    assert isinstance(body, dict)
    assert "no secondary is connected" in body["errors"][0]["title"]
    assert await credential(cluster.primary, "alone") == 200
    # Logging in (an API session, replicated too) is not held up: a lost session only
    # means logging in again, and operators must get in while no secondary runs.
    started = time.monotonic()
    status, body = await cluster.primary.api(
        "POST", "/login", json={"username": ADMIN[0], "password": ADMIN[1]}
    )
    assert status == 200, body
    assert body["data"]["token"] and time.monotonic() - started < TIMEOUT
