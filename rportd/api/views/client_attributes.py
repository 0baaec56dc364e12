"""``/clients/{id}/attributes`` and ``/clients/{id}/updates-status`` (api.md §4.3, §6).

Both reach the connected client: ``PUT attributes`` forwards the new tags and labels as the
SSH request ``update_client_metadata`` (the client rewrites its attributes file), and
``updates-status`` sends ``refresh_updates_status`` (protocol.md §5.4, §5.5).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from rportd.api.context import server_of
from rportd.api.errors import ApiError, bad_request, not_found
from rportd.api.guards import require_permission
from rportd.api.responses import envelope, no_content
from rportd.api.views.clients import accessible_client
from rportd.clients.model import Attributes, Client
from rportd.gotypes import json_kind
from rportd.wire.ssh import ConnectionClosed, RequestFailed

EXECUTION_FAILED = "Failed to execute remote command."


def active_client(request: web.Request) -> Client:
    """The accessible client of the path, if connected (404 ``Active client ...`` else)."""
    client = accessible_client(request, request.match_info["client_id"])
    if client.connection is None:
        raise not_found(f'Active client with id="{client.id}" not found.')
    return client


def parse_attributes(raw: bytes) -> Attributes:
    """The body as Go's ``json.Unmarshal`` into ``{tags, labels}`` reads it (not strict)."""
    try:
        value: Any = json.loads(raw)
    except ValueError as exc:
        message = "unexpected end of JSON input" if not raw.strip() else str(exc)
        raise bad_request(f"failed parsing attributes: {message}") from None
    if value is None:
        return Attributes(None, None)
    if not isinstance(value, dict):
        raise bad_request(
            "failed parsing attributes: json: cannot unmarshal "
            f"{json_kind(value)} into Go value of type models.Attributes"
        )
    tags, labels = value.get("tags"), value.get("labels")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise bad_request(_field_error(tags, "tags", "[]string"))
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        raise bad_request(_field_error(labels, "labels", "map[string]string"))
    return Attributes(tags, labels)


def _field_error(value: Any, field: str, go_type: str) -> str:
    kind = json_kind(value)
    if isinstance(value, list | dict):  # the first wrong element
        items = value if isinstance(value, list) else list(value.values())
        kind = next(json_kind(v) for v in items if not isinstance(v, str))
        go_type = "string"
    return (
        f"failed parsing attributes: json: cannot unmarshal {kind} into Go struct field "
        f"Attributes.{field} of type {go_type}"
    )


async def _call(client: Client, name: str, payload: Any) -> bytes:
    """Send a request to the client; its refusal is a 409, a lost connection a 500."""
    connection = client.connection
    if connection is None:
        raise not_found(f'Active client with id="{client.id}" not found.')
    try:
        return await connection.call(name, payload)
    except RequestFailed as exc:
        raise ApiError(409, f"client error: {exc.text}") from None
    except (ConnectionClosed, TimeoutError) as exc:
        raise ApiError(500, EXECUTION_FAILED, str(exc) or type(exc).__name__) from None


async def get_attributes(request: web.Request) -> web.Response:
    return envelope(active_client(request).attributes().to_json())


async def put_attributes(request: web.Request) -> web.Response:
    client = active_client(request)
    attributes = parse_attributes(await request.read())
    await _call(client, "update_client_metadata", attributes.to_json())
    client.set_attributes(attributes)
    server_of(request).clients.registry.save(client)
    return envelope("ok")


async def refresh_updates_status(request: web.Request) -> web.Response:
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "monitoring")
    if client.connection is None:
        raise not_found(f"client with id {client.id} not found")
    try:
        await _call(client, "refresh_updates_status", None)
    except ApiError as exc:  # upstream answers every failure with 500
        raise ApiError(500, exc.title, exc.items[0].detail) from None
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/clients/{client_id}/attributes", get_attributes)
    r.add_put("/api/v1/clients/{client_id}/attributes", put_attributes)
    r.add_post("/api/v1/clients/{client_id}/updates-status", refresh_updates_status)
