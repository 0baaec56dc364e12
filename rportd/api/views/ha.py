"""``/ha/*``: cluster status and promotion for people; node-to-node calls for peers."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from rportd.api.context import AUTH_KEY, server_of, set_identity
from rportd.api.errors import ApiError, conflict, forbidden, not_found
from rportd.api.guards import NOT_ADMIN, public
from rportd.api.responses import envelope, no_content
from rportd.ha import auth, replication
from rportd.ha.auth import ClusterAuthError, ClusterCaller
from rportd.ha.controller import HAController

log = logging.getLogger(__name__)

SYNC_BACK_LIMIT = 256 * 1024 * 1024


def controller(request: web.Request) -> HAController:
    ha = server_of(request).ha
    if ha is None:
        raise not_found("high availability is not configured on this node ([ha] section)")
    return ha


def cluster_caller(request: web.Request) -> ClusterCaller:
    """The peer that signed this request (403 when it did not, or not right)."""
    server = server_of(request)
    try:
        return auth.verify(
            server.config.ha.cluster_secret,
            request.headers.get(auth.HEADER),
            request.method,
            request.path,
        )
    except ClusterAuthError as exc:
        log.warning("refused node-to-node call %s %s: %s", request.method, request.path, exc)
        raise forbidden(f"cluster authentication failed: {exc}") from None


async def person_or_peer(request: web.Request, *, admin: bool) -> None:
    """A signed peer call, or an authenticated user (an admin when ``admin``)."""
    if auth.HEADER in request.headers:
        cluster_caller(request)
        return
    identity = await request.app[AUTH_KEY].authenticate(request)
    set_identity(request, identity)
    if admin and not identity.is_admin:
        raise forbidden(NOT_ADMIN)


@public
async def status(request: web.Request) -> web.Response:
    ha = controller(request)
    await person_or_peer(request, admin=False)
    return envelope(ha.status())


@public
async def promote(request: web.Request) -> web.Response:
    ha = controller(request)
    await person_or_peer(request, admin=True)
    return envelope(await ha.promote())


@public
async def node(request: web.Request) -> web.Response:
    ha = controller(request)
    cluster_caller(request)
    return envelope(ha.node_info())


@public
async def step_down(request: web.Request) -> web.Response:
    ha = controller(request)
    cluster_caller(request)
    await ha.step_down()
    return no_content()


@public
async def heartbeat(request: web.Request) -> web.Response:
    ha = controller(request)
    caller = cluster_caller(request)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "a heartbeat is a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "a heartbeat is a JSON object")
    return envelope(ha.heartbeat_received(body, caller.node_id))


@public
async def take_over(request: web.Request) -> web.Response:
    ha = controller(request)
    cluster_caller(request)
    await ha.take_over()
    return no_content()


@public
async def replicate(request: web.Request) -> web.StreamResponse:
    ha = controller(request)
    caller = cluster_caller(request)
    refusal = ha.authorize_follower(caller.epoch)
    if refusal:
        raise conflict(refusal)
    try:
        position = int(request.query.get("position", "0"))
        epoch_at = int(request.query.get("epoch", "0"))
    except ValueError:
        raise ApiError(400, "position and epoch must be integers") from None
    ws = web.WebSocketResponse(max_msg_size=0, compress=False, timeout=1.0)
    await ws.prepare(request)
    ha.streams.add(ws)
    log.info("HA: node %s replicates from position %d", caller.node_id, position)
    try:
        await ws.send_str(json.dumps({"type": "hello", **ha.node_info()}))
        await replication.stream(
            ws,
            ha.changelog,
            ha.datasets,
            position,
            epoch_at,
            f"{caller.node_id} ({request.remote})",
        )
    finally:
        ha.streams.discard(ws)
        await ws.close()
    return ws


@public
async def syncback(request: web.Request) -> web.Response:
    ha = controller(request)
    caller = cluster_caller(request)
    if ha.role != "primary" or caller.epoch > ha.epoch:
        raise conflict(f"this node does not take sync back (it is {ha.role}, epoch {ha.epoch})")
    # Node-to-node batches may hold large job results: not bound by max_request_bytes.
    raw = await request.content.read(SYNC_BACK_LIMIT + 1)
    if len(raw) > SYNC_BACK_LIMIT:
        raise ApiError(400, f"sync back batch larger than {SYNC_BACK_LIMIT} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Invalid JSON data.", str(exc)) from None
    kind, records = body.get("kind"), body.get("records")
    server = server_of(request)
    if server.syncback is None or not isinstance(kind, str) or not isinstance(records, list):
        raise ApiError(400, 'sync back needs {"kind": "...", "records": [...]}')
    try:
        stored = await server.syncback.receive(kind, records)
    except KeyError:
        raise ApiError(400, f"this node keeps no {kind!r} records") from None
    log.info(
        "HA: stored %d of %d %s records synced back by %s",
        stored,
        len(records),
        kind,
        caller.node_id,
    )
    return envelope({"stored": stored})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/ha/status", status)
    r.add_post("/api/v1/ha/promote", promote)
    r.add_get("/api/v1/ha/node", node)
    r.add_post("/api/v1/ha/step-down", step_down)
    r.add_post("/api/v1/ha/heartbeat", heartbeat)
    r.add_post("/api/v1/ha/take-over", take_over)
    r.add_get("/api/v1/ha/replication", replicate)
    r.add_post("/api/v1/ha/syncback", syncback)
