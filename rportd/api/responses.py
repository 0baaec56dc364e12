"""JSON responses in upstream's envelope, and strict JSON request bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from rportd.api.errors import ApiError
from rportd.gotypes import go_dumps, strict_loads

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


JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
"""Content types a web page may send to another site without asking it first (CORS)."""


def check_json_content_type(request: web.Request) -> None:
    """Refuse a body that does not say it is JSON (415).

    A page on another site can post forms and text with the browser's cached
    credentials; it cannot send ``application/json`` without the API's consent.
    A body without any type is allowed only with a bearer token, which a browser
    never adds on its own (rportcli sends ``/verify-2fa`` that way).
    """
    content_type = request.content_type
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        return
    if "Content-Type" not in request.headers and request.headers.get(
        "Authorization", ""
    ).lower().startswith("bearer "):
        return
    raise ApiError(
        415,
        "Unsupported content type.",
        f"the request body must be JSON sent with Content-Type: application/json, "
        f"got {request.headers.get('Content-Type', 'none')!r}",
    )


def parse_json(raw: bytes | str) -> Any:
    """Parse a request's JSON: bad syntax, too deep nesting and lone surrogates are a 400."""
    try:
        return strict_loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Invalid JSON data.", str(exc)) from None


async def read_json(request: web.Request, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; unknown keys are refused when ``allowed`` is given."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "Missing body with json data.")
    check_json_content_type(request)
    value = parse_json(raw)
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
