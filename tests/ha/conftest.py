"""Fixtures for the HA tests: a real 3-member etcd cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    """3 etcd members on 127.0.0.1, healthy; killed at the end whatever happened."""
    cluster = EtcdCluster(tmp_path / "etcd")
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()
