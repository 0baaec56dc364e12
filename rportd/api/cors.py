"""The API listener's CORS middleware (``[api] cors``); the rules are in :mod:`rportd.cors`."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from rportd.api.guards import Handler
from rportd.cors import CorsPolicy, add_headers


def middleware(policy: CorsPolicy) -> Middleware:
    """Answer preflights and add CORS headers to every other answer (errors included)."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if policy.is_preflight(request):
            return policy.preflight(request)
        headers = policy.actual_headers(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            add_headers(exc.headers, headers)
            raise
        if not response.prepared:
            add_headers(response, headers)
        return response

    return cors
