"""asyncssh client connection behaving like the Go (x/crypto v0.15.0) rport client.

Differences from stock asyncssh (protocol.md §3):

* identification ``SSH-rport-v1-client`` and acceptance of any ``SSH-`` server line,
  both used verbatim in the key-exchange hash;
* algorithm lists of x/crypto v0.15.0, ``ext-info-c`` but no strict-KEX marker;
* legacy MD5 host key fingerprint pinning (``invalid fingerprint (<fp>)``);
* global requests and replies with raw payload bytes, failure replies with text,
  Go's one-outstanding-want-reply-request rule and tolerance of stray replies;
* server-opened channels of any type handed to a delegate with their raw extra data;
* client-opened channels with raw extra data (``stdout``/``stderr``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Protocol

import asyncssh
from asyncssh.channel import SSHChannel, SSHTCPChannel
from asyncssh.constants import (
    MSG_CHANNEL_OPEN,
    MSG_GLOBAL_REQUEST,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
)
from asyncssh.misc import ChannelOpenError, ProtocolError
from asyncssh.packet import Boolean, SSHPacket, String
from asyncssh.public_key import decode_ssh_certificate, decode_ssh_public_key

__all__ = [
    "CLIENT_VERSION",
    "GO_CHANNEL_MAX_PACKET",
    "GO_CHANNEL_WINDOW",
    "GO_ENC_ALGS",
    "GO_HOST_KEY_ALGS",
    "GO_KEX_ALGS",
    "GO_MAC_ALGS",
    "ConnectionDelegate",
    "FingerprintMismatch",
    "RawChannelSession",
    "RportSSHConnection",
    "go_open_error_text",
    "make_client_options",
    "md5_fingerprint",
]

log = logging.getLogger(__name__)

CLIENT_VERSION = b"SSH-rport-v1-client"
GO_MAX_PACKET = 256 * 1024
GO_CHANNEL_MAX_PACKET = 1 << 15
GO_CHANNEL_WINDOW = 64 * GO_CHANNEL_MAX_PACKET

GO_KEX_ALGS = [
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group14-sha1",
]
GO_ENC_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]
GO_MAC_ALGS = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
    "hmac-sha1-96",
]
GO_HOST_KEY_ALGS = [
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-256",
    "rsa-sha2-512",
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
]

_OPEN_REASONS = {
    1: "administratively prohibited",
    2: "connect failed",
    3: "unknown channel type",
    4: "resource shortage",
}


class FingerprintMismatch(Exception):
    """Host key fingerprint does not start with the configured prefix."""


def go_open_error_text(exc: ChannelOpenError) -> str:
    """Go's ``OpenChannelError.Error()`` text: ``ssh: rejected: <reason> (<msg>)``."""
    reason = _OPEN_REASONS.get(exc.code, f"unknown reason {exc.code}")
    return f"ssh: rejected: {reason} ({exc.reason})"


def md5_fingerprint(key_blob: bytes) -> str:
    """Legacy OpenSSH MD5 fingerprint of an SSH wire public key blob (§3.3)."""
    return ":".join(f"{b:02x}" for b in hashlib.md5(key_blob).digest())


def make_client_options(
    username: str, password: str, *, login_timeout: float | None = None
) -> asyncssh.SSHClientConnectionOptions:
    """Client options restricted to what the Go client does (password auth only)."""
    return asyncssh.SSHClientConnectionOptions(
        config=None,
        known_hosts=None,
        username=username,
        password=password,
        client_keys=None,
        agent_path=None,
        agent_forwarding=False,
        client_host_keys=None,
        gss_host=None,
        gss_auth=False,
        gss_kex=False,
        host_based_auth=False,
        public_key_auth=False,
        kbdint_auth=False,
        password_auth=True,
        preferred_auth=("password",),
        kex_algs=GO_KEX_ALGS,
        encryption_algs=GO_ENC_ALGS,
        mac_algs=GO_MAC_ALGS,
        compression_algs=["none"],
        server_host_key_algs=GO_HOST_KEY_ALGS,
        x509_trusted_certs=None,
        rekey_bytes=1 << 30,
        rekey_seconds=0,
        keepalive_interval=0,
        login_timeout=login_timeout or 0,
        host="rport",
        port=0,
    )


class ConnectionDelegate(Protocol):
    """What :class:`RportSSHConnection` calls back into (per connection)."""

    def on_global_request(self, name: str, want_reply: bool, payload: bytes) -> None:
        """A server→client global request (payload = raw bytes after want_reply)."""

    def on_channel_open(
        self, conn: RportSSHConnection, chantype: bytes, extra: bytes
    ) -> tuple[SSHChannel[bytes], Any]:
        """A server-opened channel: return (channel, session or awaitable session)."""

    def on_connection_lost(self, exc: Exception | None) -> None:
        """The SSH connection is gone."""


class _Client(asyncssh.SSHClient):
    """SSHClient owner object; forwards connection_lost to the delegate."""

    def __init__(self, conn_ref: list[RportSSHConnection]) -> None:
        self._conn_ref = conn_ref

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn_ref:
            conn = self._conn_ref[0]
            conn.lost_exc = exc
            conn.delegate.on_connection_lost(exc)

    def auth_banner_received(self, msg: str, lang: str) -> None:  # tolerated (§3.2)
        log.debug("auth banner: %s", msg)


class RportSSHConnection(asyncssh.SSHClientConnection):
    """SSH client connection speaking the rport client dialect."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: asyncssh.SSHClientConnectionOptions,
        delegate: ConnectionDelegate,
        *,
        fingerprint: str = "",
    ) -> None:
        ref: list[RportSSHConnection] = []
        options.protocol_factory = lambda: _Client(ref)
        super().__init__(loop, options, wait="auth")
        ref.append(self)
        self.delegate = delegate
        self.fingerprint_prefix = fingerprint
        self.server_fingerprint = ""
        self.server_version_line = b""
        self.lost_exc: Exception | None = None
        self._max_recv_pktlen = GO_MAX_PACKET
        self._stray_responses: list[tuple[int, SSHPacket]] = []
        self._sent_mu = asyncio.Lock()  # Go's globalSentMu
        self._bg_tasks: set[asyncio.Task[Any]] = set()

    # ---- identification strings (§3.1)

    def _send_version(self) -> None:
        self._client_version = CLIENT_VERSION
        self.set_extra_info(client_version=CLIENT_VERSION.decode("ascii"))
        self._send(CLIENT_VERSION + b"\r\n")

    def _recv_version(self) -> bool:
        idx = self._inpbuf.find(b"\n", 0, 256)
        if idx < 0:
            if len(self._inpbuf) >= 256:
                self._force_close(ProtocolError("ssh: overflow reading version string"))
            return False
        line = self._inpbuf[:idx]
        self._inpbuf = self._inpbuf[idx + 1 :]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.startswith(b"SSH-"):
            self._banner_lines += 1  # Go skips non-SSH lines
            if self._banner_lines > 1024:
                self._force_close(ProtocolError("Too many banner lines"))
                return False
            return True
        self._server_version = line
        self.server_version_line = line
        self.set_extra_info(server_version=line.decode("ascii", "replace"))
        self._send_kexinit()
        self._kexinit_sent = True
        self._recv_handler = self._recv_pkthdr
        return True

    def _get_extra_kex_algs(self) -> list[bytes]:
        return [b"ext-info-c"]  # x/crypto v0.15.0: no kex-strict-c-v00@openssh.com

    # ---- host key (§3.3)

    def validate_server_host_key(self, key_data: bytes) -> asyncssh.SSHKey:
        fp = md5_fingerprint(key_data)
        self.server_fingerprint = fp
        if self.fingerprint_prefix and not fp.startswith(self.fingerprint_prefix):
            # not a DisconnectError: Go just drops the connection, no DISCONNECT message
            raise FingerprintMismatch(f"invalid fingerprint ({fp})")
        try:
            key: asyncssh.SSHKey = decode_ssh_certificate(key_data).key
        except asyncssh.KeyImportError:
            key = decode_ssh_public_key(key_data)
        self._server_host_key = key
        return key

    # ---- global requests (§3.5)

    def _process_global_request_raw(self, _pkttype: int, _pktid: int, packet: SSHPacket) -> None:
        name_b = packet.get_string()
        want_reply = packet.get_boolean()
        payload = packet.get_remaining_payload()
        name = name_b.decode("utf-8", "replace")
        self.delegate.on_global_request(name, want_reply, payload)

    def _process_global_response_raw(self, pkttype: int, _pktid: int, packet: SSHPacket) -> None:
        if self._global_request_waiters:
            waiter = self._global_request_waiters.pop(0)
            if not waiter.cancelled():
                waiter.set_result((pkttype, packet))
        else:
            # Go queues it; the next want-reply request receives it (wrong pairing)
            self._stray_responses.append((pkttype, packet))

    def send_global_reply(self, ok: bool, payload: bytes = b"") -> None:
        """Reply to a server request: SUCCESS/FAILURE followed by raw bytes."""
        if self.is_closed() or self._transport is None:
            return
        self.send_packet(MSG_REQUEST_SUCCESS if ok else MSG_REQUEST_FAILURE, payload)

    def send_global_request(self, name: str, payload: bytes) -> None:
        """Fire-and-forget request (want_reply=false)."""
        if self._transport is None:
            raise ConnectionError("ssh: connection closed")
        self.send_packet(MSG_GLOBAL_REQUEST, String(name), Boolean(False), payload)

    async def request(self, name: str, payload: bytes) -> tuple[bool, bytes]:
        """Want-reply request; returns (ok, reply payload). Serialised like Go's mux."""
        async with self._sent_mu:
            if self._transport is None:
                raise ConnectionError("ssh: connection closed")
            fut: asyncio.Future[tuple[int, SSHPacket]] = self._loop.create_future()
            self.send_packet(MSG_GLOBAL_REQUEST, String(name), Boolean(True), payload)
            if self._stray_responses:
                fut.set_result(self._stray_responses.pop(0))
            else:
                self._global_request_waiters.append(fut)
            pkttype, packet = await fut
            reply = packet.get_remaining_payload()
            if self._transport is None and pkttype == MSG_REQUEST_FAILURE and not reply:
                raise ConnectionError("ssh: connection closed")
            return pkttype == MSG_REQUEST_SUCCESS, reply

    async def request_with_timeout(
        self, name: str, payload: bytes, timeout: float
    ) -> tuple[bool, bytes]:
        """Like Go's ``SendRequestWithTimeout``: on timeout the send keeps waiting in
        the background (holding the mux lock) while the caller gets ``TimeoutError``."""
        task = asyncio.get_running_loop().create_task(self.request(name, payload))
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_done)
        # asyncio.wait (unlike wait_for on 3.11) never swallows a cancellation
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if task in done:
            return task.result()
        raise TimeoutError(f"conn.SendRequest({name}), timeout {_go_dur(timeout)} exceeded")

    def _bg_done(self, task: asyncio.Task[Any]) -> None:
        self._bg_tasks.discard(task)
        if not task.cancelled():
            task.exception()  # consume

    def cancel_background(self) -> None:
        """Cancel requests still waiting after a timeout."""
        for t in list(self._bg_tasks):
            t.cancel()

    # ---- channels (§6)

    def _process_channel_open_raw(self, _pkttype: int, _pktid: int, packet: SSHPacket) -> None:
        chantype = packet.get_string()
        send_chan = packet.get_uint32()
        send_window = packet.get_uint32()
        send_pktsize = packet.get_uint32()
        extra = packet.get_remaining_payload()
        if send_pktsize <= 0:
            raise ProtocolError("Invalid maximum packet size")
        try:
            chan, session = self.delegate.on_channel_open(self, chantype, extra)
            chan.process_open(send_chan, send_window, send_pktsize, session)
        except ChannelOpenError as exc:
            self.send_channel_open_failure(send_chan, exc.code, exc.reason, exc.lang)

    async def open_raw_channel(
        self,
        chantype: bytes,
        extra: bytes,
        session_factory: Any,
    ) -> tuple[SSHTCPChannel[bytes], Any]:
        """Open a client→server channel whose type-specific data is raw ``extra``."""
        chan: SSHTCPChannel[bytes] = SSHTCPChannel(
            self, self._loop, None, "strict", GO_CHANNEL_WINDOW, GO_CHANNEL_MAX_PACKET
        )
        session = await chan._open_forward(session_factory, chantype, extra)
        return chan, session

    _packet_handlers = dict(asyncssh.SSHClientConnection._packet_handlers)
    _packet_handlers[MSG_GLOBAL_REQUEST] = _process_global_request_raw
    _packet_handlers[MSG_REQUEST_SUCCESS] = _process_global_response_raw
    _packet_handlers[MSG_REQUEST_FAILURE] = _process_global_response_raw
    _packet_handlers[MSG_CHANNEL_OPEN] = _process_channel_open_raw


class TunnelChannel(SSHTCPChannel[bytes]):
    """Server-opened channel whose reading stays paused until the session resumes it."""

    async def _finish_open_request(self, result: Any) -> None:
        await SSHChannel._finish_open_request(self, result)
        if self._session is not None:
            self._session.session_started()


def new_tunnel_channel(conn: RportSSHConnection) -> TunnelChannel:
    """A channel object for a server-opened tunnel (Go window / packet sizes)."""
    return TunnelChannel(conn, conn._loop, None, "strict", GO_CHANNEL_WINDOW, GO_CHANNEL_MAX_PACKET)


class RawChannelSession(asyncssh.SSHTCPSession[bytes]):
    """Session for client-opened ``stdout``/``stderr`` channels (ignores input)."""

    def __init__(self) -> None:
        self.chan: SSHTCPChannel[bytes] | None = None
        self.closed = asyncio.Event()

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any) -> None:
        pass

    def eof_received(self) -> bool:
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def _go_dur(seconds: float) -> str:
    """Go's Duration.String() for simple values (30s, 1m0s, 1.5s, 500ms)."""
    if seconds >= 60:
        m, s = divmod(seconds, 60)
        if m >= 60:
            h, m = divmod(m, 60)
            return f"{int(h)}h{int(m)}m{_fmt_s(s)}s"
        return f"{int(m)}m{_fmt_s(s)}s"
    if seconds >= 1 or seconds == 0:
        return f"{_fmt_s(seconds)}s"
    return f"{_fmt_s(seconds * 1000)}ms"


def _fmt_s(v: float) -> str:
    s = f"{v:.9f}".rstrip("0").rstrip(".")
    return s or "0"
