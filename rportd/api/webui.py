"""The operators' web UI: static files of ``[api] doc_root`` served at ``/`` (api.md §0).

Like upstream's ``http.FileServer``: a directory answers with its ``index.html`` (a
directory asked for without its trailing slash, and ``…/index.html``, are redirected),
files carry ``Last-Modified`` (and an ``ETag``) and answer conditional and range requests.
Unknown paths under upstream's Vue history prefixes (``/dashboard``, ``/auth``, …) get the
root ``index.html``, and so does every other unknown path without a file extension in its
last segment, so a single-page app survives a reload on any of its routes; a missing asset
stays 404. No path ever leaves ``doc_root``: ``..`` segments are refused and symlinks are
followed only while their target stays inside it. Directories are never listed.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from rportd.api.guards import Handler

# Upstream's list (server/api_router.go, vueHistoryPaths): matched as path prefixes.
VUE_HISTORY_PATHS: Final = (
    "dashboard",
    "auth",
    "tunnels",
    "inventory",
    "documentation",
    "commands",
    "scripts",
    "settings",
)
INDEX: Final = "index.html"
NOT_FOUND_TEXT: Final = "404 page not found"
_COMPRESSIBLE: Final = ("text/", "application/javascript", "application/json", "image/svg+xml")
_API_PREFIX: Final = "/api/"


class DocRootError(Exception):
    """``doc_root`` cannot be served (missing or not a directory)."""


class DocRoot:
    """Maps URL paths to files inside one directory."""

    def __init__(self, directory: str) -> None:
        """Blocking (file system): build it in a thread."""
        try:
            root = Path(directory).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise DocRootError(f"[api] doc_root {directory!r} cannot be served: {exc}") from None
        if not root.is_dir():
            raise DocRootError(f"[api] doc_root {directory!r} is not a directory")
        self.root = root

    def _inside(self, path: Path) -> Path | None:
        """``path`` with every symlink resolved, if it exists and stays inside the root."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real != self.root and not real.is_relative_to(self.root):
            return None
        return real

    def locate(self, url_path: str) -> Path | None:
        """The file or directory for a decoded URL path, or None (missing or outside)."""
        parts = [p for p in url_path.split("/") if p not in ("", ".")]
        if any(p == ".." or "\\" in p or "\0" in p for p in parts):
            return None
        return self._inside(self.root.joinpath(*parts))

    def index_of(self, directory: Path) -> Path | None:
        """The ``index.html`` of a directory inside the root, if it is a file."""
        index = self._inside(directory / INDEX)
        return index if index is not None and index.is_file() else None

    def resolve(self, url_path: str) -> Path | str | None:
        """What to answer for ``url_path``: a file, a redirect target (str), or None (404).

        Blocking (file system): run it in a thread.
        """
        if url_path.endswith("/" + INDEX):
            return url_path[: -len(INDEX)]
        found = self.locate(url_path)
        if found is not None and found.is_dir():
            if not url_path.endswith("/"):
                return url_path + "/"
            return self.index_of(found)
        if found is not None and found.is_file():
            return found
        if self.is_app_route(url_path):
            return self.index_of(self.root)
        return None

    @staticmethod
    def is_app_route(url_path: str) -> bool:
        """Whether an unknown path is a route of the single-page app (answered with index)."""
        if any(url_path.startswith("/" + prefix) for prefix in VUE_HISTORY_PATHS):
            return True
        last = url_path.rstrip("/").rpartition("/")[2]
        return "." not in last


def _compressible(path: Path) -> bool:
    kind = mimetypes.guess_type(path.name)[0] or ""
    return kind.startswith(_COMPRESSIBLE)


async def serve(doc_root: DocRoot, request: web.Request) -> web.StreamResponse:
    """Answer a GET or HEAD for a path that no API route claimed."""
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405)
    target = await asyncio.to_thread(doc_root.resolve, request.path)
    if target is None:
        return web.Response(status=404, text=NOT_FOUND_TEXT)
    if isinstance(target, str):
        location = target + (f"?{request.query_string}" if request.query_string else "")
        raise web.HTTPMovedPermanently(location)
    response = web.FileResponse(target)
    # aiohttp would send a compressed empty body with a 304 or a range: compress only
    # unconditional whole-file answers.
    conditional = ("Range", "If-Modified-Since", "If-None-Match", "If-Range")
    if _compressible(target) and not any(h in request.headers for h in conditional):
        response.enable_compression()
    return response


def middleware(doc_root: DocRoot) -> Middleware:
    """Serve ``doc_root`` for every non-API request that no route matched."""

    @web.middleware
    async def web_ui(request: web.Request, handler: Handler) -> web.StreamResponse:
        unmatched = isinstance(request.match_info.http_exception, web.HTTPNotFound)
        if not unmatched or request.path.startswith(_API_PREFIX) or request.path == "/api":
            return await handler(request)
        return await serve(doc_root, request)

    return web_ui


__all__ = ["DocRoot", "DocRootError", "middleware", "serve"]
