"""File push: store the upload, send ``upload`` to every target client, report each outcome.

Each target client gets an ``upload`` request (§6.4) naming the stored file; the client
fetches it over SFTP on its own connection before it replies. The service knows which
files it offered to which client, so the SFTP side (:mod:`rportd.uploads.sftp`) serves a
client only the files currently pushed to it. The stored file is deleted once every
target has answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from rportd.auditlog.entry import (
    ACTION_FAILED,
    ACTION_SUCCESS,
    APP_UPLOADS,
    AuditEntry,
    as_json_text,
)
from rportd.auditlog.store import AuditLog
from rportd.clients.model import Client
from rportd.gotypes import go_dumpb, utcnow
from rportd.uploads.errors import UploadError
from rportd.uploads.feed import UploadFeed
from rportd.uploads.form import INCOMING_PREFIX
from rportd.uploads.model import DISABLED, UNSUPPORTED, UploadedFile, UploadOutcome
from rportd.uploads.request import PushRequest
from rportd.wire.ssh import ConnectionClosed, RequestFailed, RportServerConnection

log = logging.getLogger(__name__)

SOURCE_SUFFIX = "_rport_filepush"
NOT_CONNECTED = "client is not connected"
HEARTBEAT_EVERY = 5.0


@dataclass
class UploadSettings:
    """How long a silent client may keep a push open, and how many clients at once."""

    idle_timeout: float = 300.0
    parallelism: int = 100


def file_reception_disabled(client: Client) -> bool:
    """Upstream's reading of the stored ClientConfiguration: present and not enabled."""
    config = client.client_configuration
    if config is None:
        return False
    section = config.get("file_reception")
    return not (isinstance(section, dict) and section.get("enabled") is True)


class _Silent(Exception):
    """No SFTP activity and no reply for ``idle_timeout``."""


class UploadService:
    """Pushes uploaded files to clients in the background."""

    def __init__(
        self,
        directory: Path,
        settings: UploadSettings | None = None,
        auditlog: AuditLog | None = None,
    ) -> None:
        self.directory = directory.absolute()
        self.settings = settings or UploadSettings()
        self.auditlog = auditlog
        self.feed = UploadFeed()
        self._offers: dict[str, dict[str, int]] = {}  # client id -> source path -> pushes
        self._activity: dict[str, float] = {}  # client id -> loop time of last SFTP read
        self._active: set[str] = set()  # upload ids being distributed
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Create the upload directory and delete what an earlier run left behind."""
        await asyncio.to_thread(self._prepare_directory)

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in self.directory.iterdir():
            if entry.name.endswith(SOURCE_SUFFIX) or entry.name.startswith(INCOMING_PREFIX):
                with contextlib.suppress(OSError):
                    entry.unlink()

    async def stop(self) -> None:
        """Abandon pushes in progress and delete their files."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def in_progress(self) -> int:
        return len(self._active)

    def source_path(self, upload_id: str) -> Path:
        return self.directory / f"{upload_id}{SOURCE_SUFFIX}"

    # --- starting a push ----------------------------------------------------------------

    async def start(self, push: PushRequest) -> UploadedFile:
        """Store the received file under its upload id and send it in the background."""
        if push.id in self._active:
            raise UploadError(
                409,
                f'an upload with id "{push.id}" is still in progress',
                "use another id or leave it out",
            )
        source = self.source_path(push.id)
        await asyncio.to_thread(os.replace, push.file.path, source)
        uploaded = UploadedFile(
            id=push.id,
            source_path=str(source),
            destination=push.destination,
            mode=push.mode,
            owner=push.owner,
            group=push.group,
            force=push.force,
            sync=push.sync,
            md5=push.file.md5,
        )
        log.debug(
            "stored %s (%d bytes) as %s for %d client(s)",
            push.file.filename,
            push.file.size,
            source,
            len(push.targets),
        )
        self._active.add(push.id)
        task = asyncio.create_task(
            self._distribute(uploaded, list(push.targets)), name=f"upload-{push.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return uploaded

    async def _distribute(self, uploaded: UploadedFile, targets: list[Client]) -> None:
        queue: asyncio.Queue[Client] = asyncio.Queue()
        for client in targets:
            queue.put_nowait(client)

        async def worker() -> None:
            while not queue.empty():
                client = queue.get_nowait()
                outcome = await self._push_to(client, uploaded)
                await self._report(uploaded, client, outcome)

        workers = min(self.settings.parallelism, len(targets))
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            try:
                await asyncio.to_thread(os.remove, uploaded.source_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("failed to delete temp file path %s: %s", uploaded.source_path, exc)
            finally:
                self._active.discard(uploaded.id)

    # --- one client -------------------------------------------------------------------

    async def _push_to(self, client: Client, uploaded: UploadedFile) -> UploadOutcome:
        if file_reception_disabled(client):
            return UploadOutcome.error(client.id, uploaded.id, DISABLED)
        conn = client.connection
        if conn is None:
            return UploadOutcome.error(client.id, uploaded.id, NOT_CONNECTED)
        self._offer(client.id, uploaded.source_path)
        try:
            reply = await self._request(conn.ssh, client.id, uploaded)
        except RequestFailed as exc:
            text = UNSUPPORTED if exc.text == "unknown request" else f"client error: {exc.text}"
            return UploadOutcome.error(client.id, uploaded.id, text)
        except _Silent:
            return UploadOutcome.error(
                client.id,
                uploaded.id,
                "failed to send request: no reply and no file transfer from the client "
                f"for {self.settings.idle_timeout:g}s",
            )
        except (ConnectionClosed, asyncssh.Error, OSError) as exc:
            reason = str(exc) or "connection closed"
            return UploadOutcome.error(client.id, uploaded.id, f"failed to send request: {reason}")
        finally:
            self._withdraw(client.id, uploaded.source_path)
        try:
            return UploadOutcome.from_reply(client.id, reply)
        except ValueError as exc:
            return UploadOutcome.error(
                client.id,
                uploaded.id,
                f"invalid client response format: failed to decode response: {exc}",
            )

    async def _request(
        self, ssh: RportServerConnection, client_id: str, uploaded: UploadedFile
    ) -> bytes:
        """Send ``upload`` and wait for the reply while the client shows signs of life.

        The client replies only after the whole transfer, so there is no fixed timeout:
        the wait ends when neither a reply nor an SFTP read came for ``idle_timeout``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending = asyncio.ensure_future(ssh.request("upload", go_dumpb(uploaded.to_json()), None))
        try:
            while True:
                last = max(started, self._activity.get(client_id, 0.0))
                remaining = last + self.settings.idle_timeout - loop.time()
                if remaining <= 0:
                    raise _Silent
                done, _ = await asyncio.wait({pending}, timeout=remaining)
                if done:
                    return pending.result()
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def _report(self, uploaded: UploadedFile, client: Client, outcome: UploadOutcome) -> None:
        if outcome.failed:
            log.error(
                "upload failure: %s, file id: %s, file path: %s, client %s",
                outcome.message,
                uploaded.id,
                uploaded.destination,
                client.id,
            )
        else:
            log.info(
                "upload %s, file id: %s, file path: %s, client %s",
                outcome.status or "success",
                uploaded.id,
                uploaded.destination,
                client.id,
            )
        if self.auditlog is not None:
            try:
                await self.auditlog.add(
                    AuditEntry(
                        application=APP_UPLOADS,
                        action=ACTION_FAILED if outcome.failed else ACTION_SUCCESS,
                        affected_id=uploaded.id,
                        client_id=client.id,
                        client_hostname=client.hostname,
                        request=as_json_text(uploaded.to_json()),
                        response=as_json_text(outcome.to_json()),
                    )
                )
            except Exception:
                log.exception("could not write the audit entry of upload %s", uploaded.id)
        self.feed.publish(outcome)

    # --- what the SFTP side may serve ---------------------------------------------------

    def _offer(self, client_id: str, path: str) -> None:
        offers = self._offers.setdefault(client_id, {})
        offers[path] = offers.get(path, 0) + 1

    def _withdraw(self, client_id: str, path: str) -> None:
        offers = self._offers.get(client_id)
        if offers is None:
            return
        count = offers.get(path, 0) - 1
        if count > 0:
            offers[path] = count
            return
        offers.pop(path, None)
        if not offers:
            del self._offers[client_id]
            self._activity.pop(client_id, None)

    def offered(self, client_id: str, path: str) -> bool:
        """Whether ``path`` is being pushed to ``client_id`` right now."""
        return path in self._offers.get(client_id, {})

    def note_transfer(self, client: Client) -> None:
        """The client is reading a pushed file: it is alive and the push is progressing."""
        if client.id not in self._offers:
            return
        now = asyncio.get_running_loop().time()
        previous = self._activity.get(client.id, 0.0)
        self._activity[client.id] = now
        if now - previous >= HEARTBEAT_EVERY:
            # Its request loop is busy with the upload, so it could not answer a ping.
            client.last_heartbeat_at = utcnow()
