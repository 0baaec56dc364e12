"""Byte-level checks of what the simulator puts on the wire (raw TCP server)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from pathlib import Path

from tests.simulator import RportClientSim, SimulatorConfig

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _read_frame(r: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    key = await r.readexactly(4) if b1 & 0x80 else b""
    data = await r.readexactly(n)
    if key:
        data = bytes(c ^ key[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, bool(b0 & 0x80), data


async def test_upgrade_request_and_fragmentation(tmp_path: Path) -> None:
    seen: dict[str, object] = {}
    done = asyncio.Event()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = (await r.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        seen["request_line"] = lines[0]
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        seen["headers"] = hdrs
        digest = hashlib.sha1(hdrs["sec-websocket-key"].encode() + WS_GUID).digest()
        accept = base64.b64encode(digest)
        w.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        w.write(b"\x82\x14SSH-2.0-rawserver\r\n"[:2] + b"SSH-rport-v1-server\r\n"[:20])
        # frame: 0x82, len 20 -> "SSH-rport-v1-server\r" then a second frame with "\n"
        w.write(b"\x81\x01\n")  # a TEXT frame: must be accepted into the stream too
        frames = []
        for _ in range(3):
            frames.append(await _read_frame(r))
        seen["frames"] = frames
        done.set()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    cfg = SimulatorConfig(
        server=f"127.0.0.1:{port}/some/path",
        connect_jitter=0,
        keep_alive=0,
        data_dir=str(tmp_path),
        max_retry_count=0,
    )
    sim = RportClientSim(cfg)
    try:
        await sim.start()
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await sim.stop()
        srv.close()
        await srv.wait_closed()

    assert seen["request_line"] == "GET /some/path HTTP/1.1"
    hdrs = seen["headers"]
    assert isinstance(hdrs, dict)
    assert hdrs["sec-websocket-protocol"] == "rport-v1"
    assert hdrs["user-agent"] == "rport 0.9.14"
    assert hdrs["upgrade"].lower() == "websocket"
    assert "sec-websocket-extensions" not in hdrs
    assert "accept-encoding" not in hdrs and "origin" not in hdrs
    frames = seen["frames"]
    assert isinstance(frames, list)
    # version line alone in one message
    assert frames[0] == (0x2, True, b"SSH-rport-v1-client\r\n")
    # KEXINIT (> 1024 bytes) fragmented like gorilla's 1024-byte write buffer
    (op1, fin1, d1), (op2, fin2, d2) = frames[1], frames[2]
    assert (op1, fin1, len(d1)) == (0x2, False, 1024)
    assert op2 == 0x0 and fin2
    kexinit = d1 + d2
    assert kexinit[5] == 20  # SSH_MSG_KEXINIT
    assert b"curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256" in kexinit
    assert b"ext-info-c" in kexinit and b"kex-strict" not in kexinit
    assert b"aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com" in kexinit
    assert b"zlib" not in kexinit
