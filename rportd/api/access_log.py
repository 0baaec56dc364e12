"""``[api] access_log_file``: one Apache combined log line per API request.

Secrets in query strings (WebSocket ``access_token``) are replaced by ``REDACTED``,
and lines reach the file through a queue drained by a thread, so the event loop
never waits for the disk.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from rportd.api.security import basic_credentials
from rportd.logs import ReopenableFileHandler

SECRET_PARAMS = frozenset({"access_token", "token", "password", "auth_password"})


def redact_query(query: str) -> str:
    """The query string with secret parameters' values replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(key in SECRET_PARAMS for key, _ in pairs):
        return query
    return urlencode([(k, "REDACTED" if k in SECRET_PARAMS else v) for k, v in pairs])


def combined_line(request: web.BaseRequest, response: web.StreamResponse, now: datetime) -> str:
    """``host - user [time] "request" status size "referer" "user agent"``."""
    creds = basic_credentials(request)
    user = creds[0] if creds else "-"
    query = redact_query(request.query_string)
    target = request.path + (f"?{query}" if query else "")
    version = f"HTTP/{request.version.major}.{request.version.minor}"
    size = response.body_length if response.body_length else "-"
    peer = request.remote or "-"
    stamp = now.strftime("%d/%b/%Y:%H:%M:%S %z")
    referer = request.headers.get("Referer", "")
    agent = request.headers.get("User-Agent", "")
    return (
        f'{peer} - {user} [{stamp}] "{request.method} {target} {version}" '
        f'{response.status} {size} "{referer}" "{agent}"'
    )


class CombinedAccessLogger(AbstractAccessLogger):
    """aiohttp access logger writing Apache combined lines (see :func:`open_access_log`)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(combined_line(request, response, datetime.now(UTC).astimezone()))


def open_access_log(path: str) -> tuple[logging.Logger, logging.handlers.QueueListener]:
    """A logger whose records a background thread appends to ``path``; start the listener."""
    logger = logging.getLogger("rportd.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    logger.handlers[:] = [logging.handlers.QueueHandler(records)]
    file_handler = ReopenableFileHandler(path)  # SIGHUP reopens it
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(records, file_handler)
    listener.start()
    return logger, listener
