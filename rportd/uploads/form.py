"""The ``POST /files`` multipart body: form values, and the ``upload`` file streamed to disk.

The body may be up to ``[api] max_filepush_size`` bytes, far more than the API's usual
limit, so it is read part by part and the file goes to disk as it arrives (MD5 computed
on the way); nothing bigger than one chunk is held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from rportd.uploads.errors import UploadError

FILE_FIELD = "upload"
INCOMING_PREFIX = ".incoming-"
CHUNK = 64 * 1024
FLUSH_BYTES = 1024 * 1024
NOT_MULTIPART = "request Content-Type isn't multipart/form-data"


def too_large(limit: int) -> UploadError:
    return UploadError(
        400,
        "http: request body too large",
        f"the request body exceeds the limit of {limit} bytes ([api] max_filepush_size)",
    )


@dataclass
class ReceivedFile:
    """The uploaded file, written under a temporary name in the upload directory."""

    path: Path
    filename: str
    size: int
    md5: bytes

    async def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.remove, self.path)


@dataclass
class UploadForm:
    """Form values (all values per name, in order) and the first ``upload`` file."""

    values: dict[str, list[str]] = field(default_factory=dict)
    file: ReceivedFile | None = None

    def first(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None

    async def discard(self) -> None:
        """Delete the received file (the push did not start)."""
        if self.file is not None:
            await self.file.discard()


class _Budget:
    """Counts body bytes against the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise too_large(self.limit)


class _DiskWriter:
    """Appends chunks to a new file off the event loop, hashing them on the way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._md5 = hashlib.md5()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        def create() -> BinaryIO:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            return os.fdopen(fd, "wb")

        self._file = await asyncio.to_thread(create)

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        if data and self._file is not None:
            await asyncio.to_thread(self._write_and_hash, self._file, data)

    def _write_and_hash(self, file: BinaryIO, data: bytes) -> None:
        file.write(data)
        self._md5.update(data)

    async def close(self) -> bytes:
        """Flush, close and return the MD5 digest."""
        await self._flush()
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None
        return self._md5.digest()

    async def abort(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.remove, self.path)


async def _read_value(part: BodyPartReader, budget: _Budget) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        budget.spend(len(chunk))
        data.extend(chunk)
    return data.decode("utf-8", "replace")


async def _skip(part: BodyPartReader, budget: _Budget) -> None:
    while chunk := await part.read_chunk(CHUNK):
        budget.spend(len(chunk))


async def _receive_file(
    part: BodyPartReader, budget: _Budget, directory: Path, filename: str
) -> ReceivedFile:
    writer = _DiskWriter(directory / f"{INCOMING_PREFIX}{secrets.token_hex(8)}")
    await writer.open()
    try:
        while chunk := await part.read_chunk(CHUNK):
            budget.spend(len(chunk))
            await writer.write(chunk)
        md5 = await writer.close()
    except BaseException:
        await writer.abort()
        raise
    return ReceivedFile(writer.path, filename, writer.size, md5)


async def read_upload_form(request: web.Request, limit: int, directory: Path) -> UploadForm:
    """Read the whole multipart body (at most ``limit`` bytes) as Go's ``ParseMultipartForm``.

    Parts without a file name are values; the first file part named ``upload`` is stored in
    ``directory``; other file parts are read and dropped. Raises :class:`UploadError` (400).
    """
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    if not request.content_type.startswith("multipart/form-data"):
        raise UploadError(400, NOT_MULTIPART)
    budget = _Budget(limit)
    form = UploadForm()
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise UploadError(400, "nested multipart bodies are not supported")
            name = part.name or ""
            filename = part.filename
            if not name:
                await _skip(part, budget)
            elif filename is None:
                form.values.setdefault(name, []).append(await _read_value(part, budget))
            elif name == FILE_FIELD and form.file is None:
                form.file = await _receive_file(part, budget, directory, filename)
            else:
                await _skip(part, budget)
    except UploadError:
        await form.discard()
        raise
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        await form.discard()
        reason = (exc.message if isinstance(exc, HttpProcessingError) else str(exc)) or (
            "malformed body"
        )
        raise UploadError(400, f"multipart: {reason}") from None
    except BaseException:
        await form.discard()
        raise
    return form
