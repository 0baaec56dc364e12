"""``POST /files`` (push a file to clients) and the ``/ws/uploads`` feed (api.md §6, §7.2)."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from rportd.api.audit import audit_note
from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError
from rportd.api.guards import require_permission
from rportd.api.responses import envelope
from rportd.clients.model import Client
from rportd.jobs.targeting import resolve_targets
from rportd.uploads.errors import UploadError
from rportd.uploads.form import read_upload_form
from rportd.uploads.request import Targeting, parse_push
from rportd.uploads.service import UploadService

PERMISSION = "uploads"


def _service(request: web.Request) -> UploadService:
    uploads = server_of(request).uploads
    assert uploads is not None  # built whenever the API is
    return uploads


async def post_files(request: web.Request) -> web.Response:
    require_permission(request, PERMISSION)
    server = server_of(request)
    uploads = _service(request)
    identity = identity_of(request)
    limit = server.config.api.max_filepush_size

    def resolve(targeting: Targeting) -> list[Client]:
        return resolve_targets(targeting, server.clients.registry, server.client_groups)

    def can_access(client: Client) -> bool:
        return server.client_access.can_access(identity, client)

    try:
        form = await read_upload_form(request, limit, uploads.directory)
        try:
            push = parse_push(form, resolve, can_access)
            uploaded = await uploads.start(push)
        except BaseException:
            await form.discard()
            raise
    except UploadError as exc:
        raise ApiError(exc.status, exc.title, exc.detail, exc.code) from None
    note = audit_note(request)
    note.affected_id = uploaded.id
    note.request = uploaded.to_json()
    note.clients = [(c.id, c.hostname) for c in push.targets]
    return envelope({"uuid": uploaded.id, "filepath": uploaded.destination, "size": push.file.size})


async def ws_uploads(request: web.Request) -> web.WebSocketResponse:
    """Every upload outcome, to every listener, until the UI closes the socket."""
    require_permission(request, PERMISSION)
    feed = _service(request).feed
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    queue = feed.subscribe()

    async def forward() -> None:
        while True:
            await ws.send_str(await queue.get())

    sender = asyncio.create_task(forward(), name="ws-uploads")
    try:
        async for msg in ws:  # messages from the UI are ignored
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        feed.unsubscribe(queue)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await sender
        await ws.close()
    return ws


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/files", post_files)
    app.router.add_get("/api/v1/ws/uploads", ws_uploads)
