"""A TCP relay that tests put in front of an endpoint to cut, reset or slow its traffic.

Faults behave like a firewall between two hosts, so peers see what they would see in
a real network partition, without root:

* :meth:`FaultProxy.cut` is iptables DROP: bytes (and FIN) in the cut direction are held
  back, never refused; new connections are accepted by the proxy but do not reach the
  target, so callers time out instead of getting an error.
* :meth:`FaultProxy.reset` closes every current connection with RST (a crash).
* :meth:`FaultProxy.delay` adds latency to each chunk, both directions.
* :meth:`FaultProxy.heal` lifts cut and delay. Held bytes are then delivered and held
  connections then reach the target, as TCP's retransmissions would after a short
  partition; a peer that gave up meanwhile has closed its end and the link dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Coroutine
from typing import Any

DIRECTIONS = ("both", "to_target", "from_target")
CHUNK = 64 * 1024
QUEUED_CHUNKS = 16  # per direction: past this the relay stops reading (back-pressure)


class _Link:
    """One client connection and, once it got through, its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.target) if w is not None]

    def reset(self) -> None:
        for writer in self.writers():
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    """Relays 127.0.0.1:<port> to ``target_host:target_port`` and injects faults on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.latency = 0.0
        # A direction is open while its event is set; a cut clears it.
        self._open = {"to_target": asyncio.Event(), "from_target": asyncio.Event()}
        for event in self._open.values():
            event.set()
        self._server: asyncio.Server | None = None
        self._refusing = False
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> int:
        """Listen on 127.0.0.1 (a free port); return the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # --- faults ----------------------------------------------------------------------

    def cut(self, direction: str = "both") -> None:
        """Drop traffic silently in ``direction``: "both", "to_target" or "from_target"."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        for name, event in self._open.items():
            if direction in ("both", name):
                event.clear()

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` after it arrived (both directions)."""
        self.latency = seconds

    def reset(self) -> None:
        """Close every current connection with RST, on both sides."""
        for link in list(self._links):
            link.reset()

    def refuse(self) -> None:
        """Answer new connections with RST, as a closed port does (REJECT)."""
        self._refusing = True

    def heal(self) -> None:
        """Lift cuts, refusal and delay: held bytes and held connections go through."""
        self._refusing = False
        self.latency = 0.0
        for event in self._open.values():
            event.set()

    @property
    def is_cut(self) -> bool:
        return not all(event.is_set() for event in self._open.values())

    # --- relaying --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._spawn(self._serve(reader, writer))

    async def _wait_connectable(self) -> None:
        """A SYN gets through only when no direction is cut."""
        while self.is_cut:
            await asyncio.gather(*(event.wait() for event in self._open.values()))

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        link = _Link(client_w)
        if self._refusing:
            link.reset()
            return
        self._links.add(link)
        try:
            await self._wait_connectable()
            try:
                target_r, link.target = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                link.reset()  # the target refused: the client sees a refusal too
                return
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(self._pipe(client_r, link.target, "to_target"))
                pipes.create_task(self._pipe(target_r, client_w, "from_target"))
        except* OSError:
            link.reset()  # a peer reset (or the relay could not write): pass the RST on
        finally:
            self._links.discard(link)
            for writer in link.writers():
                writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
        """Copy ``src`` to ``dst`` (EOF included), holding chunks while ``way`` is cut."""
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(QUEUED_CHUNKS)
        reading = asyncio.ensure_future(self._read(src, queue))
        try:
            while True:
                arrived, chunk = await queue.get()
                if self.latency > 0:
                    await asyncio.sleep(arrived + self.latency - time.monotonic())
                await self._open[way].wait()
                if chunk is None:
                    raise ConnectionResetError(f"reset ({way})")
                if not chunk:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                dst.write(chunk)
                await dst.drain()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    @staticmethod
    async def _read(
        src: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes | None]]
    ) -> None:
        """Queue what arrives: bytes, b"" for EOF, None for a reset."""
        while True:
            chunk: bytes | None
            try:
                chunk = await src.read(CHUNK)
            except OSError:
                chunk = None
            await queue.put((time.monotonic(), chunk))
            if not chunk:
                return
