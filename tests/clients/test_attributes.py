"""``/clients/{id}/attributes`` and ``/updates-status``, as upstream's bdd/client_attributes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rportd.app import RportServer
from tests.clients.test_connect import Sims, sim_config, start
from tests.conftest import Api
from tests.simulator import RportClientSim
from tests.tunnels.conftest import eventually

FILE_ATTRIBUTES = {
    "tags": ["task-vm", "vm"],
    "labels": {"country": "Germany", "city": "Cologne", "datacenter": "NetCologne GmbH"},
}


@pytest.fixture
async def sims() -> AsyncIterator[Sims]:
    running: Sims = []
    yield running
    for sim in running:
        await sim.stop()


@pytest.fixture
def attributes_file(tmp_path: Path) -> Path:
    path = tmp_path / "client_attributes.json"
    path.write_text(json.dumps(FILE_ATTRIBUTES))
    return path


def file_attributes(path: Path) -> Any:
    """What the client wrote to its attributes file."""
    return json.loads(path.read_text())


async def connected(
    server: RportServer, sims: Sims, client_id: str = "c1", **kwargs: Any
) -> RportClientSim:
    sim = await start(sims, sim_config(server, client_id=client_id, **kwargs))
    await sim.wait_registered(10)
    return sim


async def tags_and_labels(api: Api, query: str = "") -> list[Any]:
    status, body = await api.get("/clients?fields[clients]=tags,labels" + query)
    assert status == 200, body
    return list(body["data"])


async def test_attributes_file_tags_and_labels_filter(
    server: RportServer, api: Api, sims: Sims, attributes_file: Path
) -> None:
    await connected(server, sims, attributes_file_path=str(attributes_file))
    expected = {
        "tags": ["task-vm", "vm"],
        "labels": {"city": "Cologne", "country": "Germany", "datacenter": "NetCologne GmbH"},
    }
    assert await tags_and_labels(api) == [expected]
    assert await tags_and_labels(api, "&filter[tags]=vm") == [expected]
    assert await tags_and_labels(api, "&filter[tags]=test") == []
    assert await tags_and_labels(api, "&filter[labels]=city:%20Cologne") == [expected]
    assert await tags_and_labels(api, "&filter[labels]=not_existing") == []

    status, body = await api.get("/clients/c1/attributes")
    assert status == 200
    assert body == {"data": expected}
    # Labels come as a Go map: keys sorted.
    assert list(body["data"]["labels"]) == ["city", "country", "datacenter"]


async def test_update_rewrites_the_client_file_and_the_server_record(
    server: RportServer, api: Api, sims: Sims, attributes_file: Path
) -> None:
    sim = await connected(server, sims, attributes_file_path=str(attributes_file))
    new = {"tags": ["test"], "labels": {"test": "test"}}
    status, body = await api.put("/clients/c1/attributes", json=new)
    assert (status, body) == (200, {"data": "ok"})

    assert file_attributes(attributes_file) == new
    assert await tags_and_labels(api, "&filter[labels]=test:%20test") == [new]
    assert await tags_and_labels(api, "&filter[tags]=vm") == []
    status, body = await api.get("/clients/c1/attributes")
    assert body == {"data": new}

    # A restarted client reads the rewritten file and reports the new attributes.
    await sim.stop()
    await connected(server, sims, attributes_file_path=str(attributes_file))
    assert await tags_and_labels(api) == [new]

    # Upstream decodes the body loosely: unknown keys are ignored, missing ones null.
    status, body = await api.put("/clients/c1/attributes", json={"tags": ["x"], "extra": 1})
    assert (status, body) == (200, {"data": "ok"})
    assert file_attributes(attributes_file) == {"tags": ["x"], "labels": None}
    assert await tags_and_labels(api) == [{"tags": ["x"], "labels": None}]


async def test_client_without_attributes_file_refuses(
    server: RportServer, api: Api, sims: Sims
) -> None:
    await connected(server, sims, attributes_file=False, tags=["kept"])
    status, body = await api.put("/clients/c1/attributes", json={"tags": [], "labels": {}})
    assert status == 409
    assert body["errors"][0]["title"] == "client error: attributes file path not set"
    assert await tags_and_labels(api) == [{"tags": ["kept"], "labels": None}]


async def test_attribute_errors(server: RportServer, api: Api, sims: Sims) -> None:
    status, body = await api.get("/clients/nope/attributes")
    assert status == 404
    assert body["errors"][0]["title"] == 'Client with id="nope" not found.'
    status, body = await api.get("/clients/nope")
    assert status == 404
    assert body["errors"][0]["title"] == 'Client with id="nope" not found.'

    sim = await connected(server, sims)
    bad_bodies = [
        (b"", "failed parsing attributes: unexpected end of JSON input"),
        (
            b'{"tags": "vm"}',
            "failed parsing attributes: json: cannot unmarshal string into Go struct field "
            "Attributes.tags of type []string",
        ),
        (
            b'{"labels": {"a": 1}}',
            "failed parsing attributes: json: cannot unmarshal number into Go struct field "
            "Attributes.labels of type string",
        ),
    ]
    for raw, title in bad_bodies:
        status, body = await api.put("/clients/c1/attributes", data=raw)
        assert status == 400, raw
        assert body["errors"][0]["title"] == title

    await sim.stop()
    await eventually(lambda: server.clients.registry.get_connected("c1") is None)
    for method in (api.get, api.put):
        status, body = await method("/clients/c1/attributes", json={"tags": []})
        assert status == 404
        assert body["errors"][0]["title"] == 'Active client with id="c1" not found.'
    status, body = await api.post("/clients/c1/updates-status")
    assert status == 404
    assert body["errors"][0]["title"] == "client with id c1 not found"


async def test_updates_status_refresh(server: RportServer, api: Api, sims: Sims) -> None:
    sim = await connected(server, sims, updates_status={"updates_available": 7})
    status, _ = await api.get("/clients/c1")
    assert status == 200
    assert server.clients.registry.get("c1").updates_status is None  # type: ignore[union-attr]

    status, body = await api.post("/clients/c1/updates-status")
    assert (status, body) == (204, None)
    assert any(name == "refresh_updates_status" for name, _, _ in sim.requests_received)
    registry = server.clients.registry
    await eventually(lambda: getattr(registry.get("c1"), "updates_status", None) is not None)
    _, body = await api.get("/clients/c1?fields[clients]=updates_status")
    assert body["data"]["updates_status"]["updates_available"] == 7
