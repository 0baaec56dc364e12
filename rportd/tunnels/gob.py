"""Go ``encoding/gob`` framing of UDP tunnel channels (protocol.md Appendix A).

Each direction of a UDP ``rport`` channel is an independent gob stream of
``UDPMessage{Addr *net.UDPAddr{IP []byte, Port int, Zone string}, Data []byte}``.
The encoder sends Go's own type definitions once, then values. The decoder
learns type ids from the definitions in the stream and matches fields by name,
because ids are assigned per process by the sender.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Builtin gob type ids.
_BOOL, _INT, _UINT, _FLOAT, _BYTES, _STRING = 1, 2, 3, 4, 5, 6
_SCALARS = frozenset({_BOOL, _INT, _UINT, _FLOAT})

MAX_MESSAGE = 1 << 20
"""Largest gob message accepted; datagrams are at most 9012 bytes (§6.1)."""

# Go's type definitions for UDPMessage (id 65) and net.UDPAddr (id 66), verbatim.
UDP_TYPE_DEFINITIONS = bytes.fromhex(
    "2bff810301010a5544504d65737361676501ff8200010201044164647201ff8400010444617461010a000000"
    "2eff83030101075544504164647201ff8400010301024950010a000104506f727401040001045a6f6e65010c000000"
)
_UDP_MESSAGE_ID = 65


class GobError(ValueError):
    """Malformed or unsupported gob data."""


@dataclass(frozen=True, slots=True)
class UDPAddr:
    """``net.UDPAddr``; ``ip`` is the raw 4 or 16 bytes."""

    ip: bytes
    port: int
    zone: str = ""


@dataclass(frozen=True, slots=True)
class UDPMessage:
    """One datagram and the address it belongs to (``None``: nil pointer)."""

    addr: UDPAddr | None
    data: bytes


# --- primitives -------------------------------------------------------------------


def encode_uint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes((256 - len(raw),)) + raw


def encode_int(value: int) -> bytes:
    return encode_uint(value << 1 if value >= 0 else ((~value) << 1) | 1)


class _Reader:
    """Cursor over one complete gob message."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def uint(self) -> int:
        buf, pos = self.buf, self.pos
        if pos >= len(buf):
            raise GobError("unexpected end of gob message")
        first = buf[pos]
        if first < 0x80:
            self.pos = pos + 1
            return first
        size = 256 - first
        if size > 8 or pos + 1 + size > len(buf):
            raise GobError("invalid gob unsigned integer")
        self.pos = pos + 1 + size
        return int.from_bytes(buf[pos + 1 : pos + 1 + size], "big")

    def int(self) -> int:
        value = self.uint()
        return ~(value >> 1) if value & 1 else value >> 1

    def bytes(self) -> bytes:
        size = self.uint()
        end = self.pos + size
        if end > len(self.buf):
            raise GobError("gob byte slice runs past the message")
        data = bytes(self.buf[self.pos : end])
        self.pos = end
        return data

    def string(self) -> str:
        return self.bytes().decode("utf-8", "replace")

    @property
    def done(self) -> bool:
        return self.pos >= len(self.buf)


# --- encoder ----------------------------------------------------------------------


class GobEncoder:
    """Encodes :class:`UDPMessage` values the way Go's ``gob.Encoder`` does."""

    def __init__(self) -> None:
        self._sent_types = False

    def encode(self, message: UDPMessage) -> bytes:
        body = bytearray(encode_int(_UDP_MESSAGE_ID))
        last = -1
        if message.addr is not None:
            body += encode_uint(0 - last)
            last = 0
            body += _encode_addr(message.addr)
        if message.data:
            body += encode_uint(1 - last)
            body += encode_uint(len(message.data))
            body += message.data
        body.append(0)
        out = encode_uint(len(body)) + bytes(body)
        if not self._sent_types:
            self._sent_types = True
            return UDP_TYPE_DEFINITIONS + out
        return out


def _encode_addr(addr: UDPAddr) -> bytes:
    out = bytearray()
    last = -1
    if addr.ip:
        out += encode_uint(0 - last) + encode_uint(len(addr.ip)) + addr.ip
        last = 0
    if addr.port:
        out += encode_uint(1 - last) + encode_int(addr.port)
        last = 1
    if addr.zone:
        zone = addr.zone.encode()
        out += encode_uint(2 - last) + encode_uint(len(zone)) + zone
    out.append(0)
    return bytes(out)


# --- decoder ----------------------------------------------------------------------


@dataclass
class _StructType:
    name: str
    fields: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _SliceType:
    elem: int


class GobDecoder:
    """Incremental decoder of a stream of ``UDPMessage`` values."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._types: dict[int, _StructType | _SliceType] = {}

    def feed(self, data: bytes) -> list[UDPMessage]:
        """Add received bytes; return every message now complete."""
        self._buf += data
        out: list[UDPMessage] = []
        buf = self._buf
        pos = 0
        while pos < len(buf):
            head = _Reader(buf, pos)
            try:
                size = head.uint()
            except GobError:
                if len(buf) - pos >= 9:
                    raise
                break  # the length prefix itself is incomplete
            if size > MAX_MESSAGE:
                raise GobError(f"gob message of {size} bytes is too large")
            if head.pos + size > len(buf):
                break
            message = self._message(_Reader(memoryview(buf)[head.pos : head.pos + size]))
            if message is not None:
                out.append(message)
            pos = head.pos + size
        del self._buf[:pos]
        return out

    def _message(self, reader: _Reader) -> UDPMessage | None:
        type_id = reader.int()
        if type_id < 0:
            self._types[-type_id] = _wire_type(reader)
            return None
        kind = self._types.get(type_id)
        if kind is None:
            raise GobError(f"gob value of undefined type id {type_id}")
        if not isinstance(kind, _StructType):
            return None  # not a UDPMessage: nothing to forward
        value = self._struct(reader, kind)
        return _udp_message(value)

    def _struct(self, reader: _Reader, kind: _StructType) -> dict[str, Any]:
        out: dict[str, Any] = {}
        index = -1
        while True:
            delta = reader.uint()
            if delta == 0:
                return out
            index += delta
            if index >= len(kind.fields):
                raise GobError(f"gob field {index} out of range for {kind.name}")
            name, type_id = kind.fields[index]
            out[name] = self._value(reader, type_id)

    def _value(self, reader: _Reader, type_id: int) -> Any:
        if type_id in _SCALARS:
            return reader.int() if type_id == _INT else reader.uint()
        if type_id == _BYTES:
            return reader.bytes()
        if type_id == _STRING:
            return reader.string()
        kind = self._types.get(type_id)
        if isinstance(kind, _StructType):
            return self._struct(reader, kind)
        if isinstance(kind, _SliceType):
            return [self._value(reader, kind.elem) for _ in range(reader.uint())]
        raise GobError(f"unsupported gob type id {type_id}")


def _common_type(reader: _Reader) -> tuple[str, int]:
    name, type_id, index = "", 0, -1
    while (delta := reader.uint()) != 0:
        index += delta
        if index == 0:
            name = reader.string()
        elif index == 1:
            type_id = reader.int()
        else:
            raise GobError("malformed gob type definition")
    return name, type_id


def _wire_type(reader: _Reader) -> _StructType | _SliceType:
    """A ``wireType`` definition: only struct and slice types appear in UDPMessage."""
    delta = reader.uint()
    kind: _StructType | _SliceType
    if delta == 3:  # field 2: StructT
        kind = _StructType("")
        index = -1
        while (step := reader.uint()) != 0:
            index += step
            if index == 0:
                kind.name, _ = _common_type(reader)
            elif index == 1:
                for _ in range(reader.uint()):
                    kind.fields.append(_common_type(reader))
            else:
                raise GobError("malformed gob struct definition")
    elif delta == 2:  # field 1: SliceT
        kind = _SliceType(0)
        index = -1
        while (step := reader.uint()) != 0:
            index += step
            if index == 0:
                _common_type(reader)
            elif index == 1:
                kind.elem = reader.int()
            else:
                raise GobError("malformed gob slice definition")
    else:
        raise GobError("unsupported gob type definition")
    if reader.uint() != 0:
        raise GobError("malformed gob type definition")
    return kind


def _udp_message(value: dict[str, Any]) -> UDPMessage:
    raw_addr = value.get("Addr")
    addr = None
    if isinstance(raw_addr, dict):
        addr = UDPAddr(
            ip=bytes(raw_addr.get("IP", b"")),
            port=int(raw_addr.get("Port", 0)),
            zone=str(raw_addr.get("Zone", "")),
        )
    data = value.get("Data", b"")
    return UDPMessage(addr, bytes(data) if isinstance(data, bytes | bytearray) else b"")
