"""``GET /api/v1/openapi.json``: the OpenAPI 3 description of everything rportd serves."""

from __future__ import annotations

import importlib.resources

from aiohttp import web

from rportd.api.guards import public

DOCUMENT = importlib.resources.files("rportd.api").joinpath("openapi.json")
_BODY = web.AppKey("rportd_openapi_body", bytes)


@public
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_BODY], content_type="application/json")


def setup(app: web.Application) -> None:
    app[_BODY] = DOCUMENT.read_bytes()  # read once, when the app is built (before serving)
    app.router.add_get("/api/v1/openapi.json", openapi)
