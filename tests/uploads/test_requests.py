"""``POST /files`` refusals: upstream's titles and codes in upstream's order; nothing kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from rportd.app import RportServer
from tests.access.conftest import make_users_db
from tests.conftest import Api, ServerFactory, api_base
from tests.dbservers import sqlite_database
from tests.uploads.conftest import SimFactory, push


def error(body: Any) -> tuple[str, str, str]:
    item = body["errors"][0]
    return item["code"], item["title"], item["detail"]


def upload_dir_empty(server: RportServer) -> bool:
    assert server.uploads is not None
    return list(server.uploads.directory.iterdir()) == []


async def test_targeting_errors(api: Api, server: RportServer, start_sim: SimFactory) -> None:
    await start_sim("c1", tags=["web"])
    cases: list[tuple[dict[str, Any], int, tuple[str, str, str]]] = [
        (
            {"dest": "/tmp/x", "mode": "bad"},  # targeting is checked before the mode
            400,
            (
                "",
                "Missing targeting parameters.",
                "please specify targeting options, such as client ids, groups ids or tags",
            ),
        ),
        (
            {"client_id": "c1", "tags": json.dumps({"tags": ["web"]}), "dest": "/tmp/x"},
            400,
            (
                "",
                "Multiple targeting parameters.",
                "multiple targeting options are not supported. Please specify only one",
            ),
        ),
        (
            {"tags": json.dumps({"tags": []}), "dest": "/tmp/x"},
            400,
            ("", "No tags specified.", "please specify tags in the tags list"),
        ),
        (
            {"tags": ['{"tags":["web"]}', '{"tags":["db"]}'], "dest": "/tmp/x"},
            400,
            ("", "tags form value must only contain a single element", ""),
        ),
        (
            {"tags": json.dumps({"tags": ["nothing-has-it"]}), "dest": "/tmp/x"},
            400,
            ("", "at least 1 client should be specified", ""),
        ),
        (
            {"client_id": "nope", "dest": "/tmp/x"},
            404,
            ("", 'Client with id="nope" not found.', ""),
        ),
        ({"group_id": "g1", "dest": "/tmp/x"}, 400, ("", 'Unknown group with id="g1".', "")),
    ]
    for values, status, expected in cases:
        got_status, body = await push(api, b"x", **values)
        assert (got_status, error(body)) == (status, expected), values
    assert upload_dir_empty(server)


async def test_form_value_errors(api: Api, server: RportServer, start_sim: SimFactory) -> None:
    await start_sim("c1")
    base = {"client_id": "c1", "dest": "/tmp/x"}
    status, body = await push(api, b"x", **base, mode="9z")
    assert (status, error(body)[1]) == (
        400,
        'failed to parse file mode value 9z: strconv.ParseInt: parsing "9z": invalid syntax',
    )
    status, body = await push(api, b"x", **base, mode="17777")
    assert status == 400 and "value out of range" in error(body)[1]
    status, body = await push(api, b"x", **base, force="maybe")
    assert (status, error(body)[1]) == (400, 'strconv.ParseBool: parsing "maybe": invalid syntax')
    status, body = await push(api, b"x", **base, sync="yes")
    assert (status, error(body)[1]) == (400, 'strconv.ParseBool: parsing "yes": invalid syntax')
    status, body = await push(api, None, **base)
    assert (status, error(body)[1]) == (400, "http: no such file")
    status, body = await push(api, b"x", **base, id="../../etc/passwd")
    assert (status, error(body)[1]) == (400, 'invalid id "../../etc/passwd"')
    status, body = await api.post("/files", json={"client_id": "c1", "dest": "/tmp/x"})
    assert (status, error(body)[1]) == (400, "request Content-Type isn't multipart/form-data")
    assert upload_dir_empty(server)


async def test_body_limit_is_max_filepush_size(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await make_server(api={"max_filepush_size": 50_000})
    api = Api(http, api_base(server), ("admin", "admin-password-123"))
    too_large = (
        "",
        "http: request body too large",
        "the request body exceeds the limit of 50000 bytes ([api] max_filepush_size)",
    )
    status, body = await push(api, b"x" * 60_000, client_id="c1", dest="/tmp/x")
    assert (status, error(body)) == (400, too_large)

    boundary = "b0undary"
    raw = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="client_id"\r\n\r\nc1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="f"\r\n\r\n'
        ).encode()
        + b"y" * 60_000
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def stream() -> AsyncIterator[bytes]:  # chunked: no Content-Length to check first
        for start in range(0, len(raw), 8192):
            yield raw[start : start + 8192]

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, body = await api.post("/files", data=stream(), headers=headers)
    assert (status, error(body)) == (400, too_large)
    assert upload_dir_empty(server)
    # Within the limit (and over the API's usual 10 KiB) it is accepted.
    status, body = await push(api, b"z" * 40_000, client_id="nope", dest="/tmp/x")
    assert (status, error(body)[1]) == (404, 'Client with id="nope" not found.')


async def test_an_upload_id_in_use_is_refused(
    api: Api, server: RportServer, start_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await start_sim("c1")
    gate = asyncio.Event()
    original = sim._req_upload

    async def held(c: Any, payload: bytes) -> bytes:
        await gate.wait()
        return await original(c, payload)

    sim._req_upload = held  # type: ignore[method-assign]
    values = {"client_id": "c1", "dest": str(tmp_path / "x"), "id": "fixed-id"}
    status, body = await push(api, b"one", **values)
    assert status == 200, body
    status, body = await push(api, b"two", **values)
    assert (status, error(body)[1]) == (409, 'an upload with id "fixed-id" is still in progress')
    gate.set()


async def test_permission_and_client_access(
    make_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    db = await make_users_db(
        sqlite_database(tmp_path),
        [("admin", "pw", ["Administrators"]), ("ops", "pw", ["ops"]), ("up", "pw", ["up"])],
        {"ops": {"commands": True}, "up": {"uploads": True}},
    )
    server = await make_server(
        database=db.section,
        api={
            "auth": None,
            "auth_user_table": "users",
            "auth_group_table": "groups",
            "auth_group_details_table": "group_details",
        },
    )
    from rportd.clients.model import Client

    server.clients.registry._index(Client(id="c1", name="one"))
    base = Api(http, api_base(server), None)
    ops, up = base.as_user("ops", "pw"), base.as_user("up", "pw")
    status, body = await push(ops, b"x", client_id="c1", dest="/tmp/x")
    assert (status, error(body)) == (403, ("", 'user does not have "uploads" permission', ""))
    status, body = await ops.get("/ws/uploads")
    assert (status, error(body)[1]) == (403, 'user does not have "uploads" permission')
    status, body = await push(up, b"x", client_id="c1", dest="/tmp/x")
    assert (status, error(body)) == (
        403,
        (
            "ACCESS_CONTROL_VIOLATION",
            "upload forbidden",
            "Access denied to client(s) with ID(s): c1",
        ),
    )
    assert upload_dir_empty(server)
