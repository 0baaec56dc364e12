"""CORS for the API and web UI listener (``[api] cors``), answered as upstream's rs/cors does.

Origins are ``*`` (any), ``scheme://host[:port]``, or such a pattern with one ``*``
wildcard (``https://*.example.com``), compared case-insensitively. Credentials are allowed;
methods HEAD, GET, POST, PUT and DELETE; request headers ``Authorization`` and
``Content-Type`` (and ``Origin``). A preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered here with 204, with the allow headers only
when origin, method and headers are all allowed. Any other request from an allowed origin
gets ``Access-Control-Allow-Origin`` (the origin itself) and
``Access-Control-Allow-Credentials``. Every answer carries ``Vary: Origin``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from rportd.api.guards import Handler

log = logging.getLogger(__name__)

ALLOWED_METHODS: Final = frozenset({"HEAD", "GET", "POST", "PUT", "DELETE"})
ALLOWED_HEADERS: Final = frozenset({"authorization", "content-type", "origin"})
PREFLIGHT_STATUS: Final = 204


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not a valid ``[api] cors`` entry, or None (upstream's rules)."""
    if origin == "*":
        return None
    try:
        parts = urlsplit(origin)
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return f"invalid scheme: {parts.scheme}"
    if not parts.netloc:
        return "must have a host"
    if parts.path:
        return "must not have a path"
    if parts.query:
        return "must not have query params"
    if parts.fragment:
        return "must not contain a fragment"
    return None


def valid_origins(entries: Iterable[str]) -> list[str]:
    """The valid entries; each invalid one is logged as an error and dropped (as upstream)."""
    result = []
    for entry in entries:
        problem = origin_problem(entry)
        if problem is not None:
            log.error("invalid cors origin %r: %s", entry, problem)
            continue
        result.append(entry)
    return result


@dataclass(frozen=True)
class CorsPolicy:
    """The allowed origins of ``[api] cors``."""

    any_origin: bool
    exact: frozenset[str]
    wildcards: tuple[tuple[str, str], ...]

    @classmethod
    def from_config(cls, entries: Iterable[str]) -> CorsPolicy:
        origins = [o.lower() for o in entries]
        exact: set[str] = set()
        wildcards: list[tuple[str, str]] = []
        for origin in origins:
            if origin == "*":
                return cls(True, frozenset(), ())
            prefix, star, suffix = origin.partition("*")
            if star:
                wildcards.append((prefix, suffix))
            else:
                exact.add(origin)
        return cls(False, frozenset(exact), tuple(wildcards))

    def allows(self, origin: str) -> bool:
        if self.any_origin:
            return True
        origin = origin.lower()
        if origin in self.exact:
            return True
        return any(
            len(origin) >= len(p) + len(s) and origin.startswith(p) and origin.endswith(s)
            for p, s in self.wildcards
        )

    def preflight(self, request: web.Request) -> web.Response:
        """The answer to a preflight request."""
        response = web.Response(status=PREFLIGHT_STATUS)
        headers = response.headers
        for name in ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"):
            headers.add("Vary", name)
        origin = request.headers.get("Origin", "")
        method = request.headers["Access-Control-Request-Method"].upper()
        requested = [
            h.strip()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        ]
        if (
            not origin
            or not self.allows(origin)
            or (method not in ALLOWED_METHODS and method != "OPTIONS")
            or any(h.lower() not in ALLOWED_HEADERS for h in requested)
        ):
            return response
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = method
        if requested:
            headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        headers["Access-Control-Allow-Credentials"] = "true"
        return response

    def actual_headers(self, request: web.Request) -> CIMultiDict[str]:
        """Headers for the answer to a non-preflight request."""
        headers: CIMultiDict[str] = CIMultiDict()
        if request.method == "OPTIONS":
            return headers
        headers["Vary"] = "Origin"
        origin = request.headers.get("Origin", "")
        if origin and self.allows(origin) and request.method in ALLOWED_METHODS:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers


def _add(target: CIMultiDict[str] | web.StreamResponse, headers: CIMultiDict[str]) -> None:
    dest = target.headers if isinstance(target, web.StreamResponse) else target
    for name, value in headers.items():
        if name == "Vary":
            dest.add(name, value)
        else:
            dest[name] = value


def middleware(policy: CorsPolicy) -> Middleware:
    """Answer preflights and add CORS headers to every other answer."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return policy.preflight(request)
        headers = policy.actual_headers(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add(exc.headers, headers)
            raise
        if not response.prepared:
            _add(response, headers)
        return response

    return cors


__all__ = ["CorsPolicy", "middleware", "origin_problem", "valid_origins"]
