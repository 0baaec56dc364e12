"""Server logging: text or JSON lines, to stdout or a file reopened on SIGHUP."""

from __future__ import annotations

import logging
import sys
import weakref

from pythonjsonlogger.json import JsonFormatter

from rportd.config.model import LoggingConfig

LEVELS = {"error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message and extras.

    Extras are the ``extra={...}`` fields of a log call (``client_id``, ``job_id``,
    ``peer``, ...); exceptions come as ``exc_info`` text.
    """
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


class ReopenableFileHandler(logging.FileHandler):
    """A log file that :meth:`reopen` closes and opens again (after logrotate moved it)."""

    def __init__(self, filename: str, encoding: str = "utf-8") -> None:
        super().__init__(filename, encoding=encoding)
        _OPEN_FILES.add(self)

    def close(self) -> None:
        _OPEN_FILES.discard(self)
        super().close()

    def reopen(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
            old = self.setStream(self._open())
            if old is not None:
                old.close()


# Every log file of the process (server log, API access log): SIGHUP reopens them all.
_OPEN_FILES: weakref.WeakSet[ReopenableFileHandler] = weakref.WeakSet()


def setup_logging(config: LoggingConfig) -> logging.Handler:
    """Install the root handler for ``[logging]``; returns it (see :func:`reopen_log`)."""
    level = LEVELS[config.log_level]
    handler: logging.Handler
    if config.log_file:
        handler = ReopenableFileHandler(config.log_file)
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        json_formatter() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("asyncssh").setLevel(max(level, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    return handler


def reopen_log() -> None:
    """Reopen the log files (SIGHUP): logrotate moves them, the next line starts a new one."""
    for handler in list(_OPEN_FILES):
        handler.reopen()
        logging.getLogger("rportd").info("reopened log file %s", handler.baseFilename)
