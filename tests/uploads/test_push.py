"""Pushing a file to simulated clients over their own connection (protocol.md §6.2, §6.4)."""

from __future__ import annotations

import asyncio
import base64
import grp
import hashlib
import json
import os
import pwd
from pathlib import Path
from typing import Any

from rportd.app import RportServer
from rportd.clients.model import Client
from tests.conftest import Api
from tests.simulator import RportClientSim
from tests.uploads.conftest import Feed, SimFactory, push, wait_settled

EXISTS = "file {} already exists, should not be synched or overwritten with force"
COPIED = "file successfully copied to destination {}"


def error(body: Any) -> dict[str, str]:
    return dict(body["errors"][0])


async def test_file_arrives_with_its_content_and_mode(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    sim = await start_sim("c1")
    content = os.urandom(300_000)  # many SFTP reads, far over the API's 10 KiB body limit
    dest = tmp_path / "out" / "sub" / "blob.bin"
    status, body = await push(api, content, client_id="c1", dest=str(dest), mode="0640")
    assert status == 200, body
    upload_id = body["data"]["uuid"]
    assert body == {"data": {"uuid": upload_id, "filepath": str(dest), "size": len(content)}}
    message = await feed.next()
    assert message == {
        "client_id": "c1",
        "uuid": upload_id,
        "filepath": str(dest),
        "size": len(content),
        "message": COPIED.format(dest),
        "status": "success",
    }
    assert dest.read_bytes() == content
    assert dest.stat().st_mode & 0o777 == 0o640
    sent = sim.uploads[0]
    assert server.uploads is not None
    assert sent["SourceFilePath"] == str(server.uploads.directory / f"{upload_id}_rport_filepush")
    assert sent["Md5Checksum"] == base64.b64encode(hashlib.md5(content).digest()).decode()
    assert (sent["DestinationFileMode"], sent["ForceWrite"], sent["Sync"]) == (0o640, False, False)
    await wait_settled(server)
    assert list(server.uploads.directory.iterdir()) == []


async def test_existing_file_is_ignored_unless_sync_finds_a_change_or_force(
    api: Api, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    await start_sim("c1")
    dest = tmp_path / "conf.txt"
    dest.write_bytes(b"old")

    async def outcome(content: bytes, **flags: str) -> dict[str, Any]:
        status, body = await push(api, content, client_id="c1", dest=str(dest), **flags)
        assert status == 200, body
        message = await feed.next()
        assert message["uuid"] == body["data"]["uuid"]
        return message

    ignored = await outcome(b"new")
    assert (ignored["status"], ignored["size"]) == ("ignored", 0)
    assert ignored["message"] == EXISTS.format(dest) and ignored["filepath"] == str(dest)
    assert dest.read_bytes() == b"old"
    synced = await outcome(b"new", sync="true")
    assert (synced["status"], synced["size"], dest.read_bytes()) == ("success", 3, b"new")
    same = await outcome(b"new", sync="1")
    assert same["status"] == "ignored" and dest.read_bytes() == b"new"
    forced = await outcome(b"forced", force="true")
    assert (forced["status"], forced["message"]) == ("success", COPIED.format(dest))
    assert dest.read_bytes() == b"forced"


async def test_protected_path_is_refused_by_the_client(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed
) -> None:
    await start_sim("c1")
    status, body = await push(api, b"x", client_id="c1", dest="/usr/bin/evil")
    assert status == 200, body
    assert await feed.next() == {
        "client_id": "c1",
        "uuid": body["data"]["uuid"],
        "filepath": "",
        "size": 0,
        "message": "client error: target path /usr/bin matches protected pattern /usr/bin, "
        "therefore the file push request is rejected",
        "status": "error",
    }
    await wait_settled(server)
    assert server.uploads is not None and list(server.uploads.directory.iterdir()) == []


async def test_server_side_destination_check(
    api: Api, server: RportServer, start_sim: SimFactory
) -> None:
    sim = await start_sim("c1")
    for dest, prefix in (("/proc/1/x", "/proc/"), ("/sys/kernel/x", "/sys/"), ("/run/x", "/run/")):
        status, body = await push(api, b"x", client_id="c1", dest=dest)
        assert (status, error(body)) == (
            400,
            {
                "code": "BAD_DESTINATION",
                "title": "upload denied",
                "detail": f"uploads to {prefix} are forbidden",
            },
        )
    status, body = await push(api, b"x", client_id="c1")
    assert (status, error(body)["title"]) == (400, "empty destination file path")
    assert not [r for r in sim.requests_received if r[0] == "upload"]
    assert server.uploads is not None and list(server.uploads.directory.iterdir()) == []


async def test_disabled_file_reception_is_reported_without_asking_the_client(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    sim = await start_sim("c1", file_reception_enabled=False)
    status, body = await push(api, b"x", client_id="c1", dest=str(tmp_path / "x"))
    assert status == 200, body
    message = await feed.next()
    assert message == {
        "client_id": "c1",
        "uuid": body["data"]["uuid"],
        "filepath": "",
        "size": 0,
        "message": "uploads are disabled on this client, check [file-reception] enabled option",
        "status": "error",
    }
    assert not [r for r in sim.requests_received if r[0] == "upload"]
    await wait_settled(server)
    assert server.uploads is not None and list(server.uploads.directory.iterdir()) == []


async def test_every_target_reports_and_the_feed_reaches_every_listener(
    api: Api,
    server: RportServer,
    start_sim: SimFactory,
    feed: Feed,
    second_feed: Feed,
    tmp_path: Path,
) -> None:
    await start_sim("c1", tags=["web"], data_dir=str(tmp_path / "c1"))
    await start_sim("c2", tags=["web", "db"], data_dir=str(tmp_path / "c2"))
    c3 = await start_sim("c3", tags=["db"], data_dir=str(tmp_path / "c3"))
    server.clients.registry._index(Client(id="offline", name="gone", tags=["web"]))
    dest = tmp_path / "pushed.txt"
    tags = json.dumps({"tags": ["web"], "operator": "OR"})
    status, body = await push(
        api, b"to all web", tags=tags, dest=str(dest), id="push-1", force="true"
    )
    assert status == 200, body
    assert body["data"]["uuid"] == "push-1"
    for listener in (feed, second_feed):
        messages = sorted(await listener.take(3), key=lambda m: m["client_id"])
        assert [(m["client_id"], m["status"]) for m in messages] == [
            ("c1", "success"),
            ("c2", "success"),
            ("offline", "error"),
        ]
        assert messages[2]["message"] == "client is not connected"
        assert {m["uuid"] for m in messages} == {"push-1"}
    assert dest.read_bytes() == b"to all web"
    assert not c3.uploads


async def test_audit_entries_for_the_push_and_each_outcome(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    await start_sim("c1")
    await start_sim("c2", file_reception_enabled=False)
    dest = tmp_path / "audited.txt"
    status, body = await push(api, b"abc", client_id=["c1", "c2"], dest=str(dest), mode="600")
    assert status == 200, body
    upload_id = body["data"]["uuid"]
    await feed.take(2)
    await wait_settled(server)
    status, body = await api.get("/auditlog", params={"filter[application]": "uploads"})
    assert status == 200, body
    entries = {(e["action"], e["client_id"]): e for e in body["data"]}
    assert set(entries) == {("create", "c1"), ("create", "c2"), ("success", "c1"), ("failed", "c2")}
    create = entries[("create", "c1")]
    assert (create["username"], create["affected_id"]) == ("admin", upload_id)
    request = json.loads(create["request"])
    assert request["DestinationPath"] == str(dest) and request["DestinationFileMode"] == 0o600
    assert request["Md5Checksum"] == base64.b64encode(hashlib.md5(b"abc").digest()).decode()
    assert json.loads(create["response"]) == {"uuid": upload_id, "filepath": str(dest), "size": 3}
    success = entries[("success", "c1")]
    assert success["username"] == "" and success["affected_id"] == upload_id
    assert json.loads(success["response"])["status"] == "success"
    failed = json.loads(entries[("failed", "c2")]["response"])
    assert failed["message"].startswith("uploads are disabled on this client")


async def test_silent_client_times_out_and_its_connection_keeps_working(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    sim = await start_sim("c1")
    gate = asyncio.Event()
    original = sim._req_upload

    async def stalled(c: Any, payload: bytes) -> bytes:
        await gate.wait()
        return await original(c, payload)

    sim._req_upload = stalled  # type: ignore[method-assign]
    assert server.uploads is not None
    server.uploads.settings.idle_timeout = 0.5
    status, body = await push(api, b"late", client_id="c1", dest=str(tmp_path / "late.txt"))
    assert status == 200, body
    message = await feed.next()
    assert message["status"] == "error"
    assert message["message"] == (
        "failed to send request: no reply and no file transfer from the client for 0.5s"
    )
    await wait_settled(server)
    assert list(server.uploads.directory.iterdir()) == []
    gate.set()  # the client now tries, fails (file gone), and its late reply is dropped
    sim._req_upload = original  # type: ignore[method-assign]
    server.uploads.settings.idle_timeout = 30
    dest = tmp_path / "next.txt"
    status, body = await push(api, b"next", client_id="c1", dest=str(dest))
    assert status == 200, body
    message = await feed.next()
    assert (message["uuid"], message["status"]) == (body["data"]["uuid"], "success")
    assert dest.read_bytes() == b"next"
    assert not (tmp_path / "late.txt").exists()


async def test_a_busy_transfer_counts_as_a_heartbeat(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    sim: RportClientSim = await start_sim("c1")
    client = server.clients.registry.get("c1")
    assert client is not None
    client.last_heartbeat_at = None
    status, body = await push(api, os.urandom(100_000), client_id="c1", dest=str(tmp_path / "b"))
    assert status == 200, body
    assert (await feed.next())["status"] == "success"
    assert client.last_heartbeat_at is not None
    assert sim.state == "connected"


async def test_owner_and_group_reach_the_client_and_count_for_sync(
    api: Api, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    sim = await start_sim("c1")
    dest = tmp_path / "owned.txt"
    dest.write_bytes(b"same")
    values = {"client_id": "c1", "dest": str(dest), "sync": "true"}
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    status, body = await push(api, b"same", **values, user=user, group=group)
    assert status == 200, body
    assert (await feed.next())["status"] == "ignored"  # same content, owner and group
    sent = sim.uploads[-1]
    assert (sent["DestinationFileOwner"], sent["DestinationFileGroup"]) == (user, group)
    status, body = await push(api, b"same", **values, user="no-such-user-x")
    assert status == 200, body
    message = await feed.next()
    assert (message["status"], message["message"]) == (
        "error",
        "client error: user: unknown user no-such-user-x",
    )
