"""JSON responses in upstream's envelope, and strict JSON request bodies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from rportd.api.errors import ApiError
from rportd.gotypes import go_dumps

CONTENT_TYPE = "application/json"


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response serialised the way Go does."""
    return web.Response(
        text=go_dumps(body), status=status, content_type=CONTENT_TYPE, charset="utf-8"
    )


def envelope(data: Any, *, count: int | None = None, status: int = 200) -> web.Response:
    """``{"data": ...}`` plus ``meta.count`` for lists that report a total."""
    body: dict[str, Any] = {"data": data}
    if count is not None:
        body["meta"] = {"count": count}
    return json_response(body, status)


def no_content() -> web.Response:
    return web.Response(status=204)


def created_empty() -> web.Response:
    return web.Response(status=201)


async def read_json(request: web.Request, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; unknown keys are refused when ``allowed`` is given."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "Missing body with json data.")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Invalid JSON data.", str(exc)) from None
    if not isinstance(value, dict):
        raise ApiError(400, "Invalid JSON data.", "expected a JSON object")
    if allowed is not None:
        known = set(allowed)
        for key in value:
            if key not in known:
                raise ApiError(400, "Invalid JSON data.", f'json: unknown field "{key}"')
    return value


def expect_type(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """``body[key]`` if present and of ``kind`` (``null`` = default), else a 400."""
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, float):
        raise ApiError(400, "Invalid JSON data.", f"json: field {key!r} must be a number")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ApiError(400, "Invalid JSON data.", f"json: field {key!r} must be of type {names}")
    return value
