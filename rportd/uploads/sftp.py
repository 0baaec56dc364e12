"""Client-opened ``session`` channels: a read-only SFTP server over the upload directory (§6.2).

A client fetches a pushed file by opening a ``session`` channel on its own connection and
starting the ``sftp`` subsystem. Only that subsystem is accepted (no shell, exec or pty),
nothing can be written, listed or renamed, and a client can open or stat only the files
being pushed to it right now. Paths outside the upload directory are refused; relative
paths are taken relative to it.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.constants import (
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_TRUNC,
    FXF_WRITE,
    OPEN_RESOURCE_SHORTAGE,
)
from asyncssh.session import SSHSession
from asyncssh.stream import SSHServerStreamSession

from rportd.wire.ssh import CHANNEL_MAX_PACKET, CHANNEL_WINDOW

if TYPE_CHECKING:
    from rportd.clients.connection import ChannelHandler, ClientConnection
    from rportd.clients.model import Client
    from rportd.uploads.service import UploadService

SFTP_VERSION = 3
MAX_SESSIONS_PER_CONNECTION = 8
READ_ONLY = "the upload directory is read-only"
OUTSIDE = "only files in the upload directory can be read"
NOT_OFFERED = "no such file is being pushed to this client"
_WRITE_FLAGS = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL


class _ServedFile:
    """An open pushed file (a read-only descriptor)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """For asyncssh's sparse-ranges extension (data/hole lookups, no I/O)."""
        return os.lseek(self.fd, offset, whence)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_only() -> NoReturn:
    raise asyncssh.SFTPPermissionDenied(READ_ONLY)


class PushedFilesSFTPServer(asyncssh.SFTPServer):
    """Serves one client the files currently pushed to it, read-only."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        root: str,
        service: UploadService,
        client: Client,
    ) -> None:
        super().__init__(chan)
        self._root = root
        self._service = service
        self._client = client

    # --- paths --------------------------------------------------------------------

    def _inside(self, path: bytes) -> str:
        text = path.decode("utf-8", "surrogateescape")
        full = posixpath.normpath(posixpath.join(self._root, text))
        if full != self._root and not full.startswith(self._root + "/"):
            raise asyncssh.SFTPPermissionDenied(OUTSIDE)
        return full

    def _pushed(self, path: bytes) -> str:
        full = self._inside(path)
        if not self._service.offered(self._client.id, full):
            raise asyncssh.SFTPNoSuchFile(NOT_OFFERED)
        return full

    def map_path(self, path: bytes) -> bytes:
        return self._pushed(path).encode("utf-8", "surrogateescape")

    def reverse_map_path(self, path: bytes) -> bytes:
        return path

    # --- reading ------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & _WRITE_FLAGS:
            _read_only()
        full = self._pushed(path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = await asyncio.to_thread(os.open, full, flags)
        except FileNotFoundError:
            raise asyncssh.SFTPNoSuchFile(NOT_OFFERED) from None
        return _ServedFile(fd)

    def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs
    ) -> object:
        raise asyncssh.SFTPOpUnsupported(f"only SFTP version {SFTP_VERSION} is served")

    def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _ServedFile)
        file_obj.close()

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _ServedFile)
        data = await asyncio.to_thread(os.pread, file_obj.fd, size, offset)
        self._service.note_transfer(self._client)
        return data

    async def fstat(self, file_obj: object) -> os.stat_result:
        assert isinstance(file_obj, _ServedFile)
        return await asyncio.to_thread(os.fstat, file_obj.fd)

    async def stat(self, path: bytes) -> os.stat_result:
        full = self._pushed(path)
        try:
            return await asyncio.to_thread(os.stat, full, follow_symlinks=False)
        except FileNotFoundError:
            raise asyncssh.SFTPNoSuchFile(NOT_OFFERED) from None

    async def lstat(self, path: bytes) -> os.stat_result:
        return await self.stat(path)

    def realpath(self, path: bytes) -> bytes:
        full = self._inside(path)
        if full != self._root and not self._service.offered(self._client.id, full):
            raise asyncssh.SFTPNoSuchFile(NOT_OFFERED)
        return full.encode("utf-8", "surrogateescape")

    # --- everything else is refused ----------------------------------------------

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        _read_only()

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        _read_only()

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        _read_only()

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        _read_only()

    def remove(self, path: bytes) -> None:
        _read_only()

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        _read_only()

    def rmdir(self, path: bytes) -> None:
        _read_only()

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        _read_only()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        _read_only()

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        _read_only()

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        _read_only()

    def fsync(self, file_obj: object) -> None:
        _read_only()

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("links are not served")

    def scandir(self, path: bytes) -> NoReturn:
        raise asyncssh.SFTPPermissionDenied("directories cannot be listed")

    def statvfs(self, path: bytes) -> NoReturn:
        raise asyncssh.SFTPPermissionDenied("file system details are not served")

    def fstatvfs(self, file_obj: object) -> NoReturn:
        raise asyncssh.SFTPPermissionDenied("file system details are not served")


class _SFTPOnlySession(SSHServerStreamSession[bytes]):
    """A session that accepts the ``sftp`` subsystem and nothing else."""

    def __init__(
        self,
        factory: Callable[[SSHChannel[bytes]], asyncssh.SFTPServer],
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(None, factory, SFTP_VERSION, allow_scp=False)
        self._on_close = on_close

    def pty_requested(self, term_type: str, term_size: object, term_modes: object) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_close()
        super().connection_lost(exc)


def sftp_channel_handler(service: UploadService) -> ChannelHandler:
    """The ``session`` channel handler for :attr:`ClientService.channel_handlers`."""
    open_sessions: dict[int, int] = {}

    def handler(
        conn: ClientConnection, payload: bytes
    ) -> tuple[SSHChannel[bytes], SSHSession[bytes]]:
        client = conn.client
        assert client is not None  # channels are only accepted after registration
        key = id(conn)
        if open_sessions.get(key, 0) >= MAX_SESSIONS_PER_CONNECTION:
            raise asyncssh.ChannelOpenError(OPEN_RESOURCE_SHORTAGE, "too many sessions")
        open_sessions[key] = open_sessions.get(key, 0) + 1

        def closed() -> None:
            left = open_sessions.get(key, 1) - 1
            if left > 0:
                open_sessions[key] = left
            else:
                open_sessions.pop(key, None)

        root = str(service.directory)

        def factory(chan: SSHChannel[bytes]) -> asyncssh.SFTPServer:
            assert isinstance(chan, asyncssh.SSHServerChannel)
            return PushedFilesSFTPServer(chan, root, service, client)

        chan: asyncssh.SSHServerChannel[bytes] = asyncssh.SSHServerChannel(
            conn.ssh,
            asyncio.get_running_loop(),
            False,  # allow_pty
            False,  # line_editor
            False,  # line_echo
            0,  # line_history
            0,  # max_line_length
            None,  # encoding: raw bytes
            "strict",
            CHANNEL_WINDOW,
            CHANNEL_MAX_PACKET,
        )
        return chan, _SFTPOnlySession(factory, closed)

    return handler
