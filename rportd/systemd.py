"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), spoken directly.

It is one datagram per message to ``$NOTIFY_SOCKET``; the only PyPI library for it
(``sdnotify``) is unmaintained since 2017 and would add nothing but the dependency.
The watchdog is fed from the event loop, so a loop that hangs stops feeding it and
systemd restarts the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from rportd.tasks import BackgroundTask

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1`` when run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval = 0.0
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # feed it twice per period
        self._socket: socket.socket | None = None
        self._failing = False  # the last send failed (logged once until one succeeds)
        self._watchdog: BackgroundTask | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, message: str) -> None:
        """Send one message (a lost one is logged, never fatal)."""
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), exc)
            self._failing = True
        else:
            self._failing = False

    def start_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Feed the watchdog while ``healthy()`` says so (if systemd asked for it)."""
        if not self.address or self.watchdog_interval <= 0 or self._watchdog is not None:
            return

        async def feed() -> None:
            while True:
                if healthy():
                    self.notify("WATCHDOG=1")
                await asyncio.sleep(self.watchdog_interval)

        self._watchdog = BackgroundTask(feed, "systemd-watchdog")
        self._watchdog.start()

    async def close(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
            self._watchdog = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
