"""asyncssh adapted to the rport dialect of SSH (protocol.md §3, §5, §11).

Upstream's client is Go's ``x/crypto/ssh`` with a few habits a standard SSH
server rejects: a non-RFC identification string, global request payloads and
failure replies that carry raw bytes, and (clients 0.8.2-0.9.6) a second,
unsolicited reply to pings. :class:`RportServerConnection` accepts all of that
and hands requests and channels to an :class:`SSHHandler`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHServerConnection
from asyncssh.constants import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_CHANNEL_OPEN,
    MSG_GLOBAL_REQUEST,
    MSG_IGNORE,
    MSG_NEWKEYS,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    OPEN_UNKNOWN_CHANNEL_TYPE,
)
from asyncssh.encryption import GCMEncryption
from asyncssh.packet import Boolean, Byte, SSHPacket, String, UInt32
from asyncssh.session import SSHSession
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

SERVER_VERSION = b"SSH-rport-v1-server"
MAX_RECV_PACKET = 16 * 1024 * 1024  # large cmd_result packets (§7.6), once logged in
PREAUTH_MAX_PACKET = 64 * 1024  # before login: a Go client's largest is its KEXINIT (~2 KiB)
CHANNEL_WINDOW = 2 * 1024 * 1024
CHANNEL_MAX_PACKET = 32 * 1024

# Algorithms a Go x/crypto client offers (§3.2), in our order of preference.
KEX_ALGS = [
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group14-sha1",
]
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]
MAC_ALGS = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
    "hmac-sha1-96",
]


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure reply; ``text`` travels as raw bytes after the message type."""

    text: str = ""


Reply = bytes | Failure
"""A global request reply: success with a raw payload, or a failure."""


class RequestFailed(Exception):
    """A request we sent was answered with a failure; ``text`` is the peer's reason."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ConnectionClosed(Exception):
    """The SSH connection ended before a reply arrived."""


class SSHHandler(Protocol):
    """The application side of one client connection."""

    def global_request(
        self, name: str, payload: bytes, want_reply: bool
    ) -> Reply | Awaitable[Reply | None] | None:
        """Handle a client request; the reply is ignored when ``want_reply`` is false."""

    def channel_requested(
        self, chantype: str, payload: bytes
    ) -> tuple[SSHChannel[bytes], SSHSession[bytes]]:
        """Accept a client-opened channel or raise :class:`asyncssh.ChannelOpenError`."""


_DATA_HEAD = struct.Struct("!BBII")  # padding length, MSG_CHANNEL_DATA, channel, data length


class RportTCPChannel(asyncssh.SSHTCPChannel[bytes]):
    """A raw-bytes channel whose data goes out without intermediate copies.

    asyncssh copies each write into a bytearray and slices packets off it, then
    builds every packet in several concatenations. Here writes are kept as they
    are, packets are memoryview slices of them, and plain data packets take
    :meth:`RportServerConnection.send_channel_data`. Window, buffer accounting
    and pause/resume stay asyncssh's.
    """

    def write(self, data: bytes, datatype: asyncssh.DataType = None) -> None:
        if datatype is not None or self._encoding or self._send_state != "open":
            super().write(data, datatype)
            return
        if not data:
            return
        held: Any = data if type(data) is bytes else bytes(data)  # never a buffer the caller reuses
        self._send_buf.append((held, None))
        self._send_buf_len += len(held)
        self._flush_send_buf()

    def _flush_send_buf(self) -> None:
        conn = self._conn
        assert isinstance(conn, RportServerConnection)
        send_buf: list[tuple[Any, asyncssh.DataType]] = self._send_buf
        while send_buf and self._send_window:
            pktsize = min(self._send_window, self._send_pktsize)
            buf, datatype = send_buf[0]
            if len(buf) > pktsize:
                view = buf if isinstance(buf, memoryview) else memoryview(buf)
                data = view[:pktsize]
                send_buf[0] = (view[pktsize:], datatype)
            else:
                data = buf
                del send_buf[0]
            size = len(data)
            self._send_buf_len -= size
            self._send_window -= size
            if datatype is None:
                conn.send_channel_data(self, data)
            else:
                self.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(datatype), String(bytes(data)))
        self._pause_resume_writing()
        if not send_buf:
            if self._send_state == "eof_pending":
                self.send_packet(MSG_CHANNEL_EOF)
                self._send_state = "eof"
            elif self._send_state == "close_pending":
                self._close_send()


class RportServerConnection(SSHServerConnection):
    """An asyncssh server connection speaking the rport dialect."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: Any) -> None:
        super().__init__(loop, options, acceptor=None, error_handler=None, wait=None)
        self._max_recv_pktlen = PREAUTH_MAX_PACKET
        self.handler: SSHHandler | None = None
        self.handshake_progress: Callable[[str], None] | None = None
        """Called with the next stage's name as the handshake moves on."""
        self._keys_agreed = False
        self.expect_stray_ping_reply = False
        self._stray_null_pending = False
        self._pending_names: list[str] = []
        self._sending = False

    # --- identification -------------------------------------------------------------

    def _send_version(self) -> None:
        self._server_version = SERVER_VERSION
        self.set_extra_info(server_version=SERVER_VERSION.decode())
        self._send(SERVER_VERSION + b"\r\n")

    def _recv_version(self) -> bool:
        idx = self._inpbuf.find(b"\n", 0, 256)
        if idx < 0:
            if len(self._inpbuf) >= 256:
                self._force_close(asyncssh.ProtocolError("Identification line too long"))
            return False
        line = self._inpbuf[:idx]
        if line.endswith(b"\r"):
            line = line[:-1]
        self._inpbuf = self._inpbuf[idx + 1 :]
        if not line.startswith(b"SSH-"):
            self._force_close(asyncssh.ProtocolNotSupported("Not an SSH client"))
            return False
        self._client_version = line
        self.set_extra_info(client_version=line.decode("ascii", "replace"))
        self._send_kexinit()
        self._kexinit_sent = True
        self._recv_handler = self._recv_pkthdr
        self._progressed("key exchange")
        return True

    def _process_newkeys(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        super()._process_newkeys(pkttype, pktid, packet)
        if not self._keys_agreed:
            self._keys_agreed = True
            self._progressed("login")

    def _progressed(self, stage: str) -> None:
        if self.handshake_progress is not None:
            self.handshake_progress(stage)

    def logged_in(self) -> None:
        """Accept packets up to :data:`MAX_RECV_PACKET` now that the peer is known."""
        self._max_recv_pktlen = max(self._max_recv_pktlen, MAX_RECV_PACKET)

    def send_server_host_keys(self) -> None:
        """Never announce host keys: the client would answer ``unknown request``."""

    # --- per-packet overhead -------------------------------------------------------

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        """Send a packet without the empty MSG_IGNORE asyncssh puts before each one.

        asyncssh adds them against IV prediction in CBC modes; ENCRYPTION_ALGS
        offers no CBC cipher, so they only double the packets (and encryptions)
        of a bulk transfer. Upstream's server sends none either.
        """
        if pkttype == MSG_IGNORE and self._sending:
            return
        outer, self._sending = self._sending, True
        try:
            super().send_packet(pkttype, *args, handler=handler)
        finally:
            self._sending = outer

    def send_channel_data(self, chan: RportTCPChannel, data: bytes | memoryview) -> None:
        """Send one MSG_CHANNEL_DATA packet on ``chan``, built and sealed in one pass.

        Byte for byte what :meth:`send_packet` sends; it is used whenever keys are
        being (re)negotiated or about to be, or packets wait for that.
        """
        send_chan = chan._send_chan
        encryption = self._send_encryption
        transport = self._transport
        if send_chan is None or transport is None:
            return
        if (
            encryption is None
            or self._compressor is not None
            or not self._kex_complete
            or not self._auth_complete
            or self._deferred_packets
            or self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)
        ):
            chan.send_packet(MSG_CHANNEL_DATA, String(bytes(data)))
            return
        size = len(data)
        blocksize = self._send_blocksize
        padlen = -(self._send_enchdrlen + 9 + size) % blocksize
        if padlen < 4:
            padlen += blocksize
        packet = b"".join(
            (_DATA_HEAD.pack(padlen, MSG_CHANNEL_DATA, send_chan, size), data, os.urandom(padlen))
        )
        pktlen = len(packet)
        seq = self._send_seq
        header = UInt32(pktlen)
        if type(encryption) is GCMEncryption:
            # What GCMCipher.encrypt_and_sign sends, without splitting the tag off the
            # ciphertext and prepending the header (two copies of every packet).
            cipher = encryption._cipher
            sealed = AESGCM(cipher._key).encrypt(cipher._iv, packet, header)
            cipher._update_iv()
            transport.writelines((header, sealed))
        else:
            sealed, mac = encryption.encrypt_packet(seq, header, packet)
            transport.writelines((sealed, mac))
        self._send_seq = (seq + 1) & 0xFFFFFFFF
        self._rekey_bytes_sent += pktlen
        if self._packet_logging():
            payload = Byte(MSG_CHANNEL_DATA) + UInt32(send_chan) + String(bytes(data))
            chan.log_sent_packet(MSG_CHANNEL_DATA, seq, payload)

    def _packet_logging(self) -> bool:
        return int(getattr(self.logger, "_debug_level", 3)) >= 3

    def log_sent_packet(self, pkttype: int, pktid: int | None, packet: Any, note: str = "") -> None:
        """Format packet logs only at asyncssh debug level 3 (they cost per packet)."""
        if self._packet_logging():
            super().log_sent_packet(pkttype, pktid, packet, note)

    def log_received_packet(
        self, pkttype: int, pktid: int | None, packet: Any, note: str = ""
    ) -> None:
        if self._packet_logging():
            super().log_received_packet(pkttype, pktid, packet, note)

    # --- client -> server global requests -------------------------------------------

    def _process_global_request(self, _pkttype: int, _pktid: int, packet: SSHPacket) -> None:
        name = packet.get_string().decode("ascii", "replace")
        want_reply = packet.get_boolean()
        payload = packet.get_remaining_payload()

        def serve(_packet: SSHPacket) -> None:
            self._serve_request(name, payload, want_reply)

        self._global_request_queue.append((serve, packet, want_reply))
        if len(self._global_request_queue) == 1:
            self._service_next_global_request()

    def _serve_request(self, name: str, payload: bytes, want_reply: bool) -> None:
        if self.handler is None:
            self._report_global_response(Failure("unknown request"))
            return
        try:
            result = self.handler.global_request(name, payload, want_reply)
        except Exception:
            log.exception("handling %s request failed", name)
            result = Failure("internal server error")
        if inspect.isawaitable(result):
            self.create_task(self._finish_request(name, result))
        else:
            self._report_global_response(result)

    async def _finish_request(self, name: str, pending: Awaitable[Reply | None]) -> None:
        try:
            result = await pending
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handling %s request failed", name)
            result = Failure("internal server error")
        if self._transport is not None:
            self._report_global_response(result)

    def _report_global_response(self, result: Any) -> None:
        _, _, want_reply = self._global_request_queue.pop(0)
        if want_reply and self._transport is not None:
            if isinstance(result, Failure):
                self.send_packet(MSG_REQUEST_FAILURE, result.text.encode())
            elif result is False or result is None:
                self.send_packet(MSG_REQUEST_FAILURE)
            else:
                self.send_packet(MSG_REQUEST_SUCCESS, b"" if result is True else result)
        if self._global_request_queue:
            self._service_next_global_request()

    # --- server -> client global requests -------------------------------------------

    async def request(self, name: str, payload: bytes, timeout: float | None) -> bytes:
        """Send a want-reply request; return the success payload.

        Raises :class:`RequestFailed` with the client's text on a failure reply,
        :class:`TimeoutError` when no reply comes in time and
        :class:`ConnectionClosed` when the connection ends first. A reply that
        arrives after a timeout is discarded, so later replies stay paired.
        """
        if self._transport is None:
            raise ConnectionClosed("connection closed")
        waiter: asyncio.Future[tuple[int, SSHPacket]] = self._loop.create_future()
        self._global_request_waiters.append(waiter)
        self._pending_names.append(name)
        self.send_packet(MSG_GLOBAL_REQUEST, String(name), Boolean(True), payload)
        pkttype, packet = await asyncio.wait_for(waiter, timeout)
        data = packet.get_remaining_payload()
        if pkttype == MSG_REQUEST_SUCCESS:
            return data
        if self._transport is None and not data:
            raise ConnectionClosed("connection closed")
        raise RequestFailed(data.decode("utf-8", "replace"))

    def notify(self, name: str, payload: bytes) -> None:
        """Send a request without want-reply (no answer is expected)."""
        if self._transport is not None:
            self.send_packet(MSG_GLOBAL_REQUEST, String(name), Boolean(False), payload)

    def _process_global_response(self, pkttype: int, _pktid: int, packet: SSHPacket) -> None:
        if self._stray_null_pending:
            self._stray_null_pending = False
            if pkttype == MSG_REQUEST_SUCCESS and packet.get_remaining_payload() == b"null":
                return
        if not self._global_request_waiters:
            log.debug("ignoring unexpected global response from %s", self._peer_addr)
            return
        waiter = self._global_request_waiters.pop(0)
        name = self._pending_names.pop(0) if self._pending_names else ""
        if name == "ping" and pkttype == MSG_REQUEST_SUCCESS and self.expect_stray_ping_reply:
            # Clients 0.8.2-0.9.6 follow their ping reply with a second one, "null".
            self._stray_null_pending = True
        if not waiter.cancelled():
            waiter.set_result((pkttype, packet))

    # --- channels -----------------------------------------------------------------

    def _process_channel_open(self, _pkttype: int, _pktid: int, packet: SSHPacket) -> None:
        chantype = packet.get_string().decode("ascii", "replace")
        send_chan = packet.get_uint32()
        send_window = packet.get_uint32()
        send_pktsize = packet.get_uint32()
        payload = packet.get_remaining_payload()
        if send_pktsize <= 0:
            raise asyncssh.ProtocolError("Invalid maximum packet size")
        try:
            if self.handler is None:
                raise asyncssh.ChannelOpenError(OPEN_UNKNOWN_CHANNEL_TYPE, "Unknown channel type")
            chan, session = self.handler.channel_requested(chantype, payload)
            chan.process_open(send_chan, send_window, send_pktsize, session)
        except asyncssh.ChannelOpenError as exc:
            self.send_channel_open_failure(send_chan, exc.code, exc.reason, exc.lang)

    # asyncssh dispatches through a class-level table of plain functions, so the
    # overrides above only take effect once they are put into our own table.
    _packet_handlers = {
        **SSHServerConnection._packet_handlers,
        MSG_GLOBAL_REQUEST: _process_global_request,
        MSG_REQUEST_SUCCESS: _process_global_response,
        MSG_REQUEST_FAILURE: _process_global_response,
        MSG_CHANNEL_OPEN: _process_channel_open,
        MSG_NEWKEYS: _process_newkeys,
    }

    def new_channel(self) -> asyncssh.SSHTCPChannel[bytes]:
        """A raw-bytes channel object for opening or accepting a channel."""
        self._update_recv_pktlen(CHANNEL_MAX_PACKET)
        return RportTCPChannel(self, self._loop, None, "strict", CHANNEL_WINDOW, CHANNEL_MAX_PACKET)

    async def open_channel(
        self,
        chantype: str,
        payload: bytes,
        session_factory: Any,
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        """Open a server-to-client channel with raw type-specific data."""
        chan = self.new_channel()
        session = await chan._open_forward(session_factory, chantype.encode(), payload)
        return chan, cast(asyncssh.SSHTCPSession[bytes], session)

    @property
    def peer_address(self) -> tuple[str, int]:
        """The remote ``(host, port)`` of the underlying connection."""
        return self._peer_addr, self._peer_port

    @property
    def is_open(self) -> bool:
        """Whether the transport is still usable."""
        return self._transport is not None


def server_options(host_key: asyncssh.SSHKey, login_timeout: float, **kwargs: Any) -> Any:
    """Connection options shared by every client connection."""
    return asyncssh.SSHServerConnectionOptions(
        server_host_keys=[host_key],
        kex_algs=KEX_ALGS,
        encryption_algs=ENCRYPTION_ALGS,
        mac_algs=MAC_ALGS,
        compression_algs=["none"],
        signature_algs=["ecdsa-sha2-nistp256"],
        password_auth=True,
        public_key_auth=False,
        kbdint_auth=False,
        host_based_auth=False,
        gss_host=None,
        allow_pty=False,
        agent_forwarding=False,
        x11_forwarding=False,
        login_timeout=login_timeout,
        keepalive_interval=0,
        rekey_bytes=1 << 30,
        **kwargs,
    )
