"""Saved commands and scripts (api.md §6, storage.md §7), replicated through the ChangeSink."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from rportd.app import RportServer
from rportd.store.changes import Document
from rportd.store.database import Transaction
from tests.conftest import Api


class RecordingSink:
    """Remembers every change and whether it came inside a transaction."""

    def __init__(self) -> None:
        self.changes: list[tuple[bool, str, str, Document | None]] = []

    writable = True

    def ensure_writable(self, dataset: str) -> None:
        return None

    async def record(
        self, tx: Transaction | None, dataset: str, key: str, doc: Document | None
    ) -> None:
        self.changes.append((tx is not None, dataset, key, doc))


async def test_command_crud(api: Api, server: RportServer) -> None:
    sink = RecordingSink()
    server.library.commands.changes = sink
    status, body = await api.post(
        "/library/commands", json={"name": "uptime", "cmd": "/usr/bin/uptime", "tags": ["a"]}
    )
    assert status == 201, body
    item = body["data"]
    assert list(item) == [
        "id", "name", "created_by", "created_at", "updated_by", "updated_at", "cmd", "tags",
        "timeout_sec",
    ]  # fmt: skip
    assert item["created_by"] == item["updated_by"] == "admin"
    assert item["timeout_sec"] == 60 and item["tags"] == ["a"]
    item_id = item["id"]

    status, body = await api.get(f"/library/commands/{item_id}")
    assert status == 200 and body["data"] == item

    status, body = await api.put(
        f"/library/commands/{item_id}",
        json={"name": "uptime2", "cmd": "/usr/bin/uptime -p", "timeout_sec": 5},
    )
    assert status == 200, body
    assert body["data"]["cmd"] == "/usr/bin/uptime -p" and body["data"]["timeout_sec"] == 5
    assert body["data"]["created_at"] == item["created_at"] and body["data"]["tags"] is None

    status, _ = await api.delete(f"/library/commands/{item_id}")
    assert status == 204
    status, body = await api.get(f"/library/commands/{item_id}")
    assert (status, body["errors"][0]["title"]) == (
        404,
        f"Cannot find a command by the provided id: {item_id}",
    )
    # create, update, delete: each recorded inside its transaction
    assert [(tx, ds, key) for tx, ds, key, _ in sink.changes] == [
        (True, "library_commands", item_id)
    ] * 3
    assert sink.changes[0][3] is not None and sink.changes[0][3]["cmd"] == "/usr/bin/uptime"
    assert sink.changes[1][3] is not None and sink.changes[1][3]["name"] == "uptime2"
    assert sink.changes[2][3] is None


async def test_script_crud_and_replication_apply(
    api: Api, server: RportServer, tmp_path: Path
) -> None:
    sink = RecordingSink()
    server.library.scripts.changes = sink
    status, body = await api.post(
        "/library/scripts",
        json={"name": "hello", "script": "echo hi", "interpreter": "/bin/bash", "is_sudo": True},
    )
    assert status == 201, body
    item = body["data"]
    assert item["interpreter"] == "/bin/bash" and item["is_sudo"] is True and item["cwd"] == ""
    assert item["script"] == "echo hi" and item["tags"] is None

    # A secondary applies the recorded documents and ends up with the same item.
    snapshot = await server.library.scripts.snapshot()
    assert snapshot == {item["id"]: sink.changes[0][3]}
    await server.library.scripts.restore({})
    status, body = await api.get("/library/scripts")
    assert body["meta"]["count"] == 0
    await server.library.scripts.apply(item["id"], sink.changes[0][3])
    status, body = await api.get(f"/library/scripts/{item['id']}")
    assert body["data"] == item
    assert len(sink.changes) == 1  # apply/restore do not record

    db = sqlite3.connect(Path(server.config.server.data_dir) / "library.db")
    row = db.execute("SELECT is_sudo, tags, timeout_sec FROM scripts").fetchone()
    db.close()
    assert row == (1, "null", 60)  # upstream's column formats


async def test_library_errors(api: Api) -> None:
    status, body = await api.post("/library/scripts", json={"interpreter": "sh"})
    assert status == 400
    assert [e["title"] for e in body["errors"]] == ["name is required", "script is required"]
    status, body = await api.post("/library/commands", json={"name": "x", "script": "ls"})
    assert (status, body["errors"][0]["detail"]) == (400, 'json: unknown field "script"')
    status, body = await api.post("/library/commands", json={"name": "x", "cmd": 1})
    assert (status, body["errors"][0]["title"]) == (400, "Invalid JSON data.")

    await api.post("/library/commands", json={"name": "dup", "cmd": "ls"})
    status, body = await api.post("/library/commands", json={"name": "dup", "cmd": "ls -l"})
    assert (status, body["errors"][0]["title"]) == (
        409,
        "another command with the same name 'dup' exists",
    )
    _, other = await api.post("/library/commands", json={"name": "other", "cmd": "ls"})
    status, body = await api.put(
        f"/library/commands/{other['data']['id']}", json={"name": "dup", "cmd": "ls"}
    )
    assert status == 409
    status, body = await api.put("/library/commands/nope", json={"name": "n", "cmd": "ls"})
    assert (status, body["errors"][0]["title"]) == (404, "cannot find entry by the provided ID")
    status, body = await api.delete("/library/commands/nope")
    assert (status, body["errors"][0]["title"]) == (
        404,
        "cannot find this entry by the provided id",
    )


async def test_library_list_queries(api: Api) -> None:
    for n in range(25):
        tags = ["even"] if n % 2 == 0 else ["odd"]
        status, _ = await api.post(
            "/library/scripts",
            json={"name": f"s{n:02d}", "script": f"echo {n}", "tags": tags, "is_sudo": n == 3},
        )
        assert status == 201

    status, body = await api.get("/library/scripts")
    assert body["meta"]["count"] == 25 and len(body["data"]) == 20  # default page 20
    status, body = await api.get(
        "/library/scripts",
        params=[("sort", "-name"), ("page[limit]", "3"), ("page[offset]", "1")],
    )
    assert [i["name"] for i in body["data"]] == ["s23", "s22", "s21"]
    status, body = await api.get(
        "/library/scripts", params={"filter[tags]": "odd", "filter[name]": "s1*", "sort": "name"}
    )
    assert [i["name"] for i in body["data"]] == [f"s{n}" for n in range(11, 20, 2)]
    assert body["meta"]["count"] == 5
    status, body = await api.get(
        "/library/scripts", params={"filter[is_sudo]": "true", "fields[scripts]": "name,is_sudo"}
    )
    assert body["data"] == [{"name": "s03", "is_sudo": True}]
    status, body = await api.get("/library/scripts", params={"page[limit]": "101"})
    assert (status, body["errors"][0]["title"]) == (
        400,
        "pagination limit too big (101) maximum is 100",
    )
    status, body = await api.get("/library/scripts", params={"sort": "timeout_sec"})
    assert (status, body["errors"][0]["title"]) == (400, "unsupported sort field 'timeout_sec'")
    status, body = await api.get("/library/commands", params={"filter[interpreter]": "sh"})
    assert status == 400
    items: list[Any] = []
    status, body = await api.get("/library/commands")
    assert body == {"data": items, "meta": {"count": 0}}
