"""CORS (``[api] cors``, ``[server] tunnel_cors``), answered as upstream's rs/cors does.

Origins are ``*`` (any), ``scheme://host[:port]``, or such a pattern with one ``*``
wildcard (``https://*.example.com``), compared case-insensitively. Credentials are allowed.
A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered with 204,
with the allow headers only when origin, method and headers are all allowed. Any other
request from an allowed origin gets ``Access-Control-Allow-Origin`` (the origin itself)
and ``Access-Control-Allow-Credentials``. Every answer carries ``Vary: Origin``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

# The API's options (server/api_router.go); the tunnel proxy adds PATCH and any header.
API_METHODS: Final = frozenset({"HEAD", "GET", "POST", "PUT", "DELETE"})
API_HEADERS: Final = frozenset({"authorization", "content-type"})
PROXY_METHODS: Final = API_METHODS | {"PATCH"}
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
    """Allowed origins, methods and request headers (``None``: any header)."""

    any_origin: bool
    exact: frozenset[str]
    wildcards: tuple[tuple[str, str], ...]
    methods: frozenset[str] = API_METHODS
    headers: frozenset[str] | None = API_HEADERS

    @classmethod
    def from_config(
        cls,
        entries: Iterable[str],
        methods: frozenset[str] = API_METHODS,
        headers: frozenset[str] | None = API_HEADERS,
    ) -> CorsPolicy:
        """The policy for the valid ``entries`` (see :func:`valid_origins`)."""
        exact: set[str] = set()
        wildcards: list[tuple[str, str]] = []
        for origin in (o.lower() for o in entries):
            if origin == "*":
                return cls(True, frozenset(), (), methods, headers)
            prefix, star, suffix = origin.partition("*")
            if star:
                wildcards.append((prefix, suffix))
            else:
                exact.add(origin)
        return cls(False, frozenset(exact), tuple(wildcards), methods, headers)

    def _header_allowed(self, name: str) -> bool:
        # rs/cors always allows "Origin" besides the configured headers.
        return self.headers is None or name.lower() in self.headers or name.lower() == "origin"

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

    def is_preflight(self, request: web.BaseRequest) -> bool:
        return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

    def preflight(self, request: web.BaseRequest) -> web.Response:
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
            or (method not in self.methods and method != "OPTIONS")
            or not all(self._header_allowed(h) for h in requested)
        ):
            return response
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = method
        if requested:
            headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        headers["Access-Control-Allow-Credentials"] = "true"
        return response

    def actual_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        """Headers for the answer to a non-preflight request."""
        headers: CIMultiDict[str] = CIMultiDict()
        if request.method == "OPTIONS":
            return headers
        headers["Vary"] = "Origin"
        origin = request.headers.get("Origin", "")
        if origin and self.allows(origin) and request.method in self.methods:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers


def add_headers(target: CIMultiDict[str] | web.StreamResponse, headers: CIMultiDict[str]) -> None:
    """Put ``headers`` (from :meth:`CorsPolicy.actual_headers`) on a response."""
    dest = target.headers if isinstance(target, web.StreamResponse) else target
    for name, value in headers.items():
        if name == "Vary":
            dest.add(name, value)
        else:
            dest[name] = value


__all__ = ["CorsPolicy", "add_headers", "origin_problem", "valid_origins"]
