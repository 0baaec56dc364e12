"""The etcd test cluster itself: a clear failure without etcd, port clashes, restarts."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import aiohttp
import pytest

from tests import etcd as etcd_module
from tests.etcd import EtcdCluster


def test_missing_etcd_binary_fails_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_module, "ETCD", str(tmp_path / "no-etcd"))
    with pytest.raises(pytest.fail.Exception, match=r"tests/setup/system-packages\.sh"):
        etcd_module.etcd_binary()


async def test_a_port_taken_meanwhile_starts_the_cluster_on_new_ports(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd")
    taken = cluster.members[0].client_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            await cluster.start()
            assert taken not in [member.client_port for member in cluster.members]
            assert all(member.running for member in cluster.members)
        finally:
            await cluster.close()
    assert not any(member.running for member in cluster.members)


async def test_a_restarted_member_keeps_its_data(etcd: EtcdCluster) -> None:
    key, value = base64.b64encode(b"k").decode(), base64.b64encode(b"v").decode()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            etcd.endpoints[1] + "/v3/kv/put", json={"key": key, "value": value}
        ) as resp:
            assert resp.status == 200, await resp.text()
        etcd.members[0].kill()
        await etcd.restart(0)
        async with session.post(etcd.endpoints[0] + "/v3/kv/range", json={"key": key}) as resp:
            body = await resp.json()
    assert body["kvs"][0]["value"] == value
