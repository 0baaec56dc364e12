"""Live job output for UI WebSockets (api.md §7.1) and the client's output channels (§6.3)."""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import Callable
from typing import Any, Protocol

import asyncssh

from rportd.gotypes import go_dumps

log = logging.getLogger(__name__)

CHUNK_BYTES = 4096
_CLOSE = object()


class TextSink(Protocol):
    """Where a stream writes (an aiohttp ``WebSocketResponse``)."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...


class JobStream:
    """Ordered messages to one UI WebSocket: output chunks, then one final job per client.

    Like upstream, the socket is done after as many final messages as target
    clients (``expect``) or when :meth:`close` is called.
    """

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._queue: asyncio.Queue[tuple[Any, bool]] = asyncio.Queue()
        self._remaining = 1
        self.done = False

    def expect(self, finals: int) -> None:
        """How many final messages end the stream."""
        self._remaining = finals

    def partial(self, message: dict[str, Any]) -> None:
        """Queue a live output message (does not count as final)."""
        if not self.done:
            self._queue.put_nowait((go_dumps(message) + "\n", False))

    def final(self, text: str) -> None:
        """Queue the final message of one client's job."""
        if not self.done:
            self._queue.put_nowait((text, True))

    def close(self) -> None:
        """End the stream after what is queued already."""
        self._queue.put_nowait((_CLOSE, False))

    async def run(self) -> None:
        """Write queued messages in order until the stream is done."""
        try:
            while not self.done:
                text, is_final = await self._queue.get()
                if text is _CLOSE:
                    break
                try:
                    await self._sink.send_str(text)
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("UI WebSocket gone: %s", exc)
                    break
                if is_final:
                    self._remaining -= 1
                    if self._remaining <= 0:
                        break
        finally:
            self.done = True


def output_message(job: dict[str, Any], kind: str, text: str) -> dict[str, Any]:
    """A live output chunk as upstream forwards it to the UI."""
    return {
        "jid": job.get("jid", ""),
        "client_id": job.get("client_id", ""),
        "client_name": job.get("client_name", ""),
        "result": {
            "stdout": text if kind == "stdout" else "",
            "stderr": text if kind == "stderr" else "",
            "summary": "",
        },
    }


class OutputChannelSession(asyncssh.SSHTCPSession[bytes]):
    """A client-opened ``stdout``/``stderr`` channel: chunks go to the job's UI stream."""

    def __init__(
        self,
        kind: str,
        job: dict[str, Any],
        stream_key: str,
        find_stream: Callable[[str], JobStream | None],
    ) -> None:
        self.kind = kind
        self.job = job
        self.stream_key = stream_key
        self._find_stream = find_stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        for start in range(0, len(data), CHUNK_BYTES):
            self._forward(self._decoder.decode(data[start : start + CHUNK_BYTES]))

    def eof_received(self) -> bool:
        self._forward(self._decoder.decode(b"", final=True))
        return False

    def _forward(self, text: str) -> None:
        if not text:
            return
        stream = self._find_stream(self.stream_key)
        if stream is not None:
            stream.partial(output_message(self.job, self.kind, text))
