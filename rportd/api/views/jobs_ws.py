"""``/ws/commands`` and ``/ws/scripts``: run on many clients, stream output live (api.md §7.1)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

from aiohttp import WSMsgType, web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError
from rportd.api.guards import require_permission
from rportd.api.views.jobs import check_access
from rportd.gotypes import go_dumps
from rportd.httputil import client_ip
from rportd.jobs.audit import record_start
from rportd.jobs.model import MultiJob
from rportd.jobs.requests import (
    JobRequestError,
    MultiJobRequest,
    check_command,
    decode_script,
    interpreter_problem,
)
from rportd.jobs.service import JobSpec
from rportd.jobs.streams import JobStream
from rportd.jobs.targeting import resolve_targets

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "Inbound message should contain non empty json object with command data."


class _Refused(Exception):
    """The first message cannot start a job; sent to the UI as an error."""

    def __init__(self, title: str, detail: str = "") -> None:
        super().__init__(title or detail)
        self.title = title
        self.detail = detail


async def _first_request(ws: web.WebSocketResponse) -> MultiJobRequest:
    msg = await ws.receive()
    if msg.type == WSMsgType.TEXT:
        text = str(msg.data)
    elif msg.type == WSMsgType.BINARY:
        text = bytes(msg.data).decode("utf-8", "replace")
    else:
        raise _Refused(EMPTY_MESSAGE)
    text = text.lstrip()
    if not text:
        raise _Refused(EMPTY_MESSAGE)
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError as exc:
        raise _Refused("Invalid JSON data.", str(exc)) from None
    except RecursionError:
        raise _Refused("Invalid JSON data.", "the JSON document is nested too deeply") from None
    try:
        return MultiJobRequest.parse(value)
    except JobRequestError as exc:
        raise _Refused(exc.title, exc.detail) from None


async def _start(
    request: web.Request, ws: web.WebSocketResponse, *, is_script: bool
) -> tuple[MultiJob, JobStream]:
    server = server_of(request)
    req = await _first_request(ws)
    try:
        targets = resolve_targets(req, server.clients.registry, server.client_groups)
    except JobRequestError as exc:
        raise _Refused("", exc.text) from None
    command = req.command
    if is_script:
        try:
            command = decode_script(req.script)
        except JobRequestError as exc:
            raise _Refused("Failed to create script on multiple clients", exc.text) from None
    try:
        check_command(command)
    except JobRequestError as exc:
        raise _Refused(exc.title) from None
    problem = interpreter_problem(req.interpreter, is_script)
    if problem is not None:
        raise _Refused("Invalid interpreter", problem)
    try:
        check_access(request, targets)
    except ApiError as exc:
        raise _Refused(exc.title) from None
    stream = JobStream(ws)
    spec = JobSpec.of(req, command, is_script=is_script)
    username = identity_of(request).username
    multi = await server.jobs.start_multi(req, spec, targets, username, stream)
    if server.auditlog is not None:
        audited = dataclasses.replace(req, command=command, timeout_sec=multi.timeout_sec)
        await record_start(
            server.auditlog,
            is_script=is_script,
            jid=multi.jid,
            username=username,
            remote_ip=client_ip(request),
            request=audited.to_json(),
            targets=targets,
        )
    return multi, stream


async def _watch_ui(ws: web.WebSocketResponse, stream: JobStream) -> None:
    """Anything from the UI after the start (a message or its close) ends the stream."""
    await ws.receive()
    stream.close()


async def _serve(request: web.Request, *, is_script: bool) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    try:
        multi, stream = await _start(request, ws, is_script=is_script)
    except _Refused as exc:
        error = {"errors": [{"code": "", "title": exc.title, "detail": exc.detail}]}
        await ws.send_str(go_dumps(error) + "\n")
        await ws.close()
        return ws
    jobs = server_of(request).jobs
    watcher = asyncio.create_task(_watch_ui(ws, stream), name=f"ws-jobs-{multi.jid}")
    try:
        await stream.run()
    finally:
        jobs.detach_stream(multi.jid)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await ws.close()
    return ws


async def ws_commands(request: web.Request) -> web.StreamResponse:
    require_permission(request, "commands")
    return await _serve(request, is_script=False)


async def ws_scripts(request: web.Request) -> web.StreamResponse:
    require_permission(request, "scripts")
    return await _serve(request, is_script=True)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/ws/commands", ws_commands)
    app.router.add_get("/api/v1/ws/scripts", ws_scripts)
