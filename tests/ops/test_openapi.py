"""rportd's own OpenAPI document: served, true to the router, and survived by schemathesis."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from rportd.api.app import create_api_app
from rportd.api.views.openapi import DOCUMENT
from rportd.app import RportServer

METHODS = ("get", "put", "post", "delete", "patch")


def documented() -> set[tuple[str, str]]:
    doc = json.loads(DOCUMENT.read_text())
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def routed(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path template) the API app serves; HEAD and static files aside."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None or isinstance(resource, web.StaticResource):
            continue
        found.add((route.method, resource.canonical))
    return found


async def test_the_document_lists_exactly_the_routes_served(server: RportServer) -> None:
    served = routed(create_api_app(server))
    doc = documented()
    assert not served - doc, f"routes missing from openapi.json: {sorted(served - doc)}"
    assert not doc - served, f"openapi.json documents routes not served: {sorted(doc - served)}"


async def test_the_document_is_served_without_login(
    server: RportServer, http: aiohttp.ClientSession
) -> None:
    assert server.api_address is not None
    url = "http://{}:{}/api/v1/openapi.json".format(*server.api_address)
    async with http.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        served = await resp.json()
    assert served == json.loads(DOCUMENT.read_text())
    assert served["openapi"].startswith("3.")
