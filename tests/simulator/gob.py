"""Minimal Go ``encoding/gob`` codec for the UDP tunnel framing (protocol.md Appendix A).

Each direction of a UDP ``rport`` channel is an independent gob stream of
``UDPMessage{Addr *net.UDPAddr{IP []byte, Port int, Zone string}, Data []byte}``.
The decoder is generic enough to learn type ids from in-stream definitions and match
fields by name; the encoder emits the two definitions once and then values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GobDecoder",
    "GobEncoder",
    "GobError",
    "UDPAddr",
    "UDPMessage",
    "decode_uint",
    "encode_int",
    "encode_uint",
]

# builtin gob type ids
_BOOL, _INT, _UINT, _FLOAT, _BYTES, _STRING, _COMPLEX, _INTERFACE = 1, 2, 3, 4, 5, 6, 7, 8
_WIRETYPE, _ARRAYTYPE, _COMMONTYPE, _SLICETYPE, _STRUCTTYPE = 16, 17, 18, 19, 20
_FIELDTYPE, _FIELDSLICE, _MAPTYPE = 21, 22, 23

MAX_MESSAGE = 16 * 1024 * 1024


class GobError(Exception):
    """Malformed or unsupported gob data."""


@dataclass(frozen=True)
class UDPAddr:
    """``net.UDPAddr``: ``ip`` kept as the raw bytes received (4 or 16 bytes)."""

    ip: bytes
    port: int
    zone: str = ""


@dataclass(frozen=True)
class UDPMessage:
    """One datagram: ``addr`` may be ``None`` (nil pointer)."""

    addr: UDPAddr | None
    data: bytes


# --------------------------------------------------------------------------- primitives


def encode_uint(n: int) -> bytes:
    """gob unsigned integer encoding."""
    if n < 0:
        raise ValueError("negative uint")
    if n < 128:
        return bytes((n,))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((256 - len(b),)) + b


def encode_int(i: int) -> bytes:
    """gob signed integer encoding."""
    u = (i << 1) if i >= 0 else (((~i) << 1) | 1)
    return encode_uint(u)


def decode_uint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned int at ``pos``; returns (value, new_pos)."""
    if pos >= len(buf):
        raise GobError("unexpected EOF")
    b0 = buf[pos]
    if b0 < 128:
        return b0, pos + 1
    n = 256 - b0
    if n > 8:
        raise GobError("invalid uint length")
    end = pos + 1 + n
    if end > len(buf):
        raise GobError("unexpected EOF")
    return int.from_bytes(bytes(buf[pos + 1 : end]), "big"), end


def _decode_int(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    u, pos = decode_uint(buf, pos)
    if u & 1:
        return ~(u >> 1), pos
    return u >> 1, pos


def _decode_bytes(buf: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    n, pos = decode_uint(buf, pos)
    end = pos + n
    if end > len(buf):
        raise GobError("unexpected EOF")
    return bytes(buf[pos:end]), end


# --------------------------------------------------------------------------- encoder

# The exact type definitions Go emits for UDPMessage (type ids 65 and 66).
UDP_TYPE_DEFS = bytes.fromhex(
    "2bff810301010a5544504d65737361676501ff8200010201044164647201ff8400010444617461010a000000"
    "2eff83030101075544504164647201ff8400010301024950010a000104506f727401040001045a6f6e65010c000000"
)
_MSG_TYPE_ID = 65


class GobEncoder:
    """Encodes a stream of :class:`UDPMessage` exactly like Go's ``gob.Encoder``."""

    def __init__(self) -> None:
        self._sent_types = False

    def encode(self, msg: UDPMessage) -> bytes:
        """Return the bytes for one message (type definitions prepended the first time)."""
        body = bytearray(encode_int(_MSG_TYPE_ID))
        last = -1
        if msg.addr is not None:
            body += encode_uint(0 - last)
            last = 0
            a = msg.addr
            sub_last = -1
            if a.ip:
                body += encode_uint(0 - sub_last) + encode_uint(len(a.ip)) + a.ip
                sub_last = 0
            if a.port:
                body += encode_uint(1 - sub_last) + encode_int(a.port)
                sub_last = 1
            if a.zone:
                z = a.zone.encode()
                body += encode_uint(2 - sub_last) + encode_uint(len(z)) + z
            body += b"\x00"
        if msg.data:
            body += encode_uint(1 - last) + encode_uint(len(msg.data)) + msg.data
        body += b"\x00"
        out = encode_uint(len(body)) + bytes(body)
        if not self._sent_types:
            self._sent_types = True
            return UDP_TYPE_DEFS + out
        return out


# --------------------------------------------------------------------------- decoder


@dataclass
class _Type:
    kind: str  # "struct" | "slice" | "array" | "map" | "gobencoder"
    name: str = ""
    fields: list[tuple[str, int]] | None = None
    elem: int = 0
    key: int = 0
    length: int = 0


class GobDecoder:
    """Incremental decoder: feed bytes, get decoded top-level values."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._types: dict[int, _Type] = {}

    def feed(self, data: bytes) -> list[Any]:
        """Feed stream bytes; returns the list of completely decoded values."""
        self._buf += data
        out: list[Any] = []
        while True:
            if not self._buf:
                break
            try:
                length, pos = decode_uint(self._buf, 0)
            except GobError:
                if len(self._buf) < 9:
                    break
                raise
            if length > MAX_MESSAGE:
                raise GobError("message too large")
            if len(self._buf) < pos + length:
                break
            msg = bytes(self._buf[pos : pos + length])
            del self._buf[: pos + length]
            value = self._message(msg)
            if value is not None:
                out.append(value)
        return out

    def feed_messages(self, data: bytes) -> list[UDPMessage]:
        """Like :meth:`feed` but converts values to :class:`UDPMessage`."""
        return [to_udp_message(v) for v in self.feed(data)]

    # ---- internals

    def _message(self, msg: bytes) -> Any:
        type_id, pos = _decode_int(msg, 0)
        if type_id < 0:
            self._types[-type_id] = self._wire_type(msg, pos)
            return None
        t = self._types.get(type_id)
        if t is None and type_id >= 65:
            raise GobError(f"unknown type id {type_id}")
        if t is not None and t.kind == "struct":
            value, _ = self._value(type_id, msg, pos)
            return value
        # non-struct top-level values are preceded by a zero delta byte
        if pos >= len(msg) or msg[pos] != 0:
            raise GobError("bad singleton value")
        value, _ = self._value(type_id, msg, pos + 1)
        return value

    def _common(self, msg: bytes, pos: int) -> tuple[str, int, int]:
        name, tid, last = "", 0, -1
        while True:
            delta, pos = decode_uint(msg, pos)
            if delta == 0:
                return name, tid, pos
            last += delta
            if last == 0:
                raw, pos = _decode_bytes(msg, pos)
                name = raw.decode("utf-8", "replace")
            elif last == 1:
                tid, pos = _decode_int(msg, pos)
            else:
                raise GobError("bad CommonType")

    def _wire_type(self, msg: bytes, pos: int) -> _Type:
        delta, pos = decode_uint(msg, pos)
        which = delta - 1
        t: _Type
        if which == 2:  # StructT
            t = _Type("struct", fields=[])
            last = -1
            while True:
                d, pos = decode_uint(msg, pos)
                if d == 0:
                    break
                last += d
                if last == 0:
                    t.name, _, pos = self._common(msg, pos)
                elif last == 1:
                    count, pos = decode_uint(msg, pos)
                    for _ in range(count):
                        fname, ftid, flast = "", 0, -1
                        while True:
                            fd, pos = decode_uint(msg, pos)
                            if fd == 0:
                                break
                            flast += fd
                            if flast == 0:
                                raw, pos = _decode_bytes(msg, pos)
                                fname = raw.decode("utf-8", "replace")
                            elif flast == 1:
                                ftid, pos = _decode_int(msg, pos)
                            else:
                                raise GobError("bad fieldType")
                        t.fields.append((fname, ftid))  # type: ignore[union-attr]
                else:
                    raise GobError("bad structType")
        elif which in (0, 1, 3):  # ArrayT, SliceT, MapT
            kind = {0: "array", 1: "slice", 3: "map"}[which]
            t = _Type(kind)
            last = -1
            while True:
                d, pos = decode_uint(msg, pos)
                if d == 0:
                    break
                last += d
                if last == 0:
                    t.name, _, pos = self._common(msg, pos)
                elif kind == "map" and last == 1:
                    t.key, pos = _decode_int(msg, pos)
                elif last == 1 or (kind == "map" and last == 2):
                    t.elem, pos = _decode_int(msg, pos)
                elif kind == "array" and last == 2:
                    t.length, pos = _decode_int(msg, pos)
                else:
                    raise GobError("bad composite type")
        elif which in (4, 5, 6):  # GobEncoder / BinaryMarshaler / TextMarshaler
            t = _Type("gobencoder")
            d, pos = decode_uint(msg, pos)
            if d:
                t.name, _, pos = self._common(msg, pos)
                decode_uint(msg, pos)
        else:
            raise GobError("unsupported wireType")
        return t

    def _value(self, tid: int, msg: bytes, pos: int) -> tuple[Any, int]:
        if tid == _BOOL:
            u, pos = decode_uint(msg, pos)
            return u != 0, pos
        if tid == _INT:
            return _decode_int(msg, pos)
        if tid == _UINT:
            return decode_uint(msg, pos)
        if tid == _FLOAT:
            u, pos = decode_uint(msg, pos)
            rev = int.from_bytes(u.to_bytes(8, "little"), "big")
            return struct.unpack(">d", rev.to_bytes(8, "big"))[0], pos
        if tid == _BYTES:
            return _decode_bytes(msg, pos)
        if tid == _STRING:
            raw, pos = _decode_bytes(msg, pos)
            return raw.decode("utf-8", "replace"), pos
        if tid == _COMPLEX:
            re_, pos = self._value(_FLOAT, msg, pos)
            im, pos = self._value(_FLOAT, msg, pos)
            return complex(re_, im), pos
        t = self._types.get(tid)
        if t is None:
            raise GobError(f"unsupported type id {tid}")
        if t.kind == "struct":
            out: dict[str, Any] = {}
            last = -1
            assert t.fields is not None
            while True:
                d, pos = decode_uint(msg, pos)
                if d == 0:
                    return out, pos
                last += d
                if last >= len(t.fields):
                    raise GobError("field number out of range")
                fname, ftid = t.fields[last]
                out[fname], pos = self._value(ftid, msg, pos)
        if t.kind in ("slice", "array"):
            n, pos = decode_uint(msg, pos)
            items = []
            for _ in range(n):
                v, pos = self._value(t.elem, msg, pos)
                items.append(v)
            return items, pos
        if t.kind == "map":
            n, pos = decode_uint(msg, pos)
            m: dict[Any, Any] = {}
            for _ in range(n):
                k, pos = self._value(t.key, msg, pos)
                v, pos = self._value(t.elem, msg, pos)
                m[k] = v
            return m, pos
        return _decode_bytes(msg, pos)  # GobEncoder-style opaque bytes


def to_udp_message(value: Any) -> UDPMessage:
    """Convert a decoded struct (dict) into a :class:`UDPMessage`."""
    if not isinstance(value, dict):
        raise GobError("value is not a struct")
    addr_v = value.get("Addr")
    addr: UDPAddr | None = None
    if isinstance(addr_v, dict):
        ip = addr_v.get("IP", b"")
        addr = UDPAddr(
            ip=bytes(ip) if isinstance(ip, bytes | bytearray) else b"",
            port=int(addr_v.get("Port", 0) or 0),
            zone=str(addr_v.get("Zone", "") or ""),
        )
    data = value.get("Data", b"")
    return UDPMessage(addr=addr, data=bytes(data) if isinstance(data, bytes) else b"")
