"""``/ws/commands`` and ``/ws/scripts``: live output chunks, then the final job (api.md §7.1)."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp

from rportd.app import RportServer
from rportd.clients.model import Client
from tests.conftest import Api, api_base
from tests.jobs.conftest import SimFactory, wait_multi


async def token(api: Api) -> str:
    status, body = await api.get("/login")
    assert status == 200, body
    return str(body["data"]["token"])


async def ws_url(server: RportServer, api: Api, path: str = "commands") -> str:
    base = api_base(server).replace("http://", "ws://")
    return f"{base}/ws/{path}?access_token={await token(api)}"


async def collect(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    out = []
    async for msg in ws:
        assert msg.type == aiohttp.WSMsgType.TEXT
        out.append(json.loads(msg.data))
    return out


async def test_streams_output_then_final_job(
    api: Api, http: aiohttp.ClientSession, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1")
    command = "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three"
    async with http.ws_connect(await ws_url(server, api)) as ws:
        await ws.send_str(json.dumps({"client_ids": ["c1"], "command": command, "timeout_sec": 5}))
        messages = await collect(ws)
    *chunks, final = messages
    assert chunks, messages
    for chunk in chunks:
        assert set(chunk) == {"jid", "client_id", "client_name", "result"}
        assert chunk["jid"] == final["jid"] and chunk["client_id"] == "c1"
        assert chunk["client_name"] == "name-c1" and chunk["result"]["summary"] == ""
    assert "".join(c["result"]["stdout"] for c in chunks) == "one\nthree\n"
    assert "".join(c["result"]["stderr"] for c in chunks) == "two\n"
    assert final["status"] == "successful" and final["stream_result"] is True
    assert final["result"] == {"stdout": "one\nthree\n", "stderr": "two\n", "summary": ""}
    multi_jid = final["multi_job_id"]
    assert multi_jid  # the WebSocket path always creates a multi-client job
    multi = await wait_multi(api, multi_jid, 1)
    assert multi["jobs"][0]["jid"] == final["jid"]
    assert multi["jobs"][0]["result"]["stdout"] == "one\nthree\n"


async def test_multi_client_stream_closes_after_every_final(
    api: Api, http: aiohttp.ClientSession, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1")
    await start_sim("c2")
    server.clients.registry._index(Client(id="offline", name="gone"))
    async with http.ws_connect(await ws_url(server, api)) as ws:
        await ws.send_str(
            json.dumps(
                {
                    "client_ids": ["c1", "offline", "c2"],
                    "command": "echo hi",
                    "execute_concurrently": True,
                }
            )
        )
        messages = await collect(ws)
    finals = [m for m in messages if "status" in m]
    assert sorted((m["client_id"], m["status"]) for m in finals) == [
        ("c1", "successful"),
        ("c2", "successful"),
        ("offline", "failed"),
    ]
    failed = next(m for m in finals if m["client_id"] == "offline")
    assert failed["error"] == "client is not connected" and failed["finished_at"]


async def test_script_over_websocket(
    api: Api, http: aiohttp.ClientSession, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1", remote_scripts_enabled=True)
    script = base64.b64encode(b"echo scripted").decode()
    async with http.ws_connect(await ws_url(server, api, "scripts")) as ws:
        await ws.send_str(json.dumps({"client_ids": ["c1"], "script": script}))
        messages = await collect(ws)
    assert messages[-1]["is_script"] is True
    assert messages[-1]["result"]["stdout"] == "scripted\n"


async def test_errors_are_sent_then_the_socket_closes(
    api: Api, http: aiohttp.ClientSession, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1")
    cases: list[tuple[str, str, str, str]] = [
        ("commands", "{", "Invalid JSON data.", "Expecting property name enclosed in double "
         "quotes: line 1 column 2 (char 1)"),
        ("commands", '{"client_ids":["c1"],"x":1}', "Invalid JSON data.",
         'json: unknown field "x"'),
        ("commands", "{}", "",
         "please specify targeting options, such as client ids, groups ids or tags"),
        ("commands", '{"client_ids":["c1"]}', "Command cannot be empty.", ""),
        ("commands", '{"client_ids":["c1"],"command":"x","interpreter":"bash"}',
         "Invalid interpreter",
         "expected interpreter to be one of: [cmd powershell tacoscript], actual: bash"),
        ("scripts", '{"client_ids":["c1"]}', "Failed to create script on multiple clients",
         "Missing script body"),
        ("commands", " ", "Inbound message should contain non empty json object with command "
         "data.", ""),
    ]  # fmt: skip
    for path, message, title, detail in cases:
        async with http.ws_connect(await ws_url(server, api, path)) as ws:
            await ws.send_str(message)
            messages = await collect(ws)
        assert messages == [{"errors": [{"code": "", "title": title, "detail": detail}]}], message


async def test_websocket_needs_a_token(
    api: Api, http: aiohttp.ClientSession, server: RportServer
) -> None:
    base = api_base(server)
    async with http.get(f"{base}/ws/commands") as resp:
        assert resp.status == 401
        assert (await resp.json())["errors"][0]["title"] == "token required"
    async with http.get(f"{base}/ws/commands?access_token=garbage") as resp:
        assert resp.status in (401, 500)


async def test_a_message_from_the_ui_closes_the_stream(
    api: Api, http: aiohttp.ClientSession, server: RportServer, start_sim: SimFactory
) -> None:
    await start_sim("c1")
    async with http.ws_connect(await ws_url(server, api)) as ws:
        await ws.send_str(json.dumps({"client_ids": ["c1"], "command": "sleep 1; echo x"}))
        await ws.send_str("stop")
        messages = await collect(ws)
    assert all("status" not in m for m in messages)  # closed before the result came
    _status, body = await api.get("/commands")
    multi = await wait_multi(api, body["data"][0]["jid"], 1)
    assert multi["jobs"][0]["status"] == "successful"  # the job itself ran to its end
