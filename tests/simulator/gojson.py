"""Go ``encoding/json`` compatible encoding and (typed) decoding helpers.

The real client is a Go program: everything it sends is produced by ``json.Marshal``
(compact, struct field order, sorted map keys, ``<``/``>``/``&`` escaped, floats in Go
format, times in RFC 3339 with nanoseconds) and everything it receives is decoded by
``json.Unmarshal`` into typed structs (case-insensitive keys, unknown keys ignored,
type mismatches are errors).  This module reproduces both sides closely enough for the
simulator to behave like the client on the wire.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "GoDecodeError",
    "GoStruct",
    "RawJSON",
    "go_dumps",
    "go_duration",
    "go_error_text_for_json",
    "go_map",
    "go_time",
    "go_time_now",
    "go_time_utc_now",
    "go_unmarshal",
    "parse_go_time",
]


class RawJSON:
    """Already-encoded JSON inserted verbatim by :func:`go_dumps`."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# --------------------------------------------------------------------------- encoding

_ESCAPE_RE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:  # lone surrogate = invalid UTF-8 for Go
        return "\\ufffd"
    return f"\\u{code:04x}"


def _go_string(s: str) -> str:
    return '"' + _ESCAPE_RE.sub(_escape_char, s) + '"'


def _go_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"json: unsupported value: {f}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        s = repr(f)  # shortest digits; exponent has >= 2 digits like Go's 'e' format
        if "e" not in s:
            s = f"{f:e}"
        m = re.match(r"^(-?[\d.]+)e([+-])0(\d)$", s)
        if m and m.group(2) == "-":  # Go's encoder turns e-07 into e-7
            s = f"{m.group(1)}e-{m.group(3)}"
        return s.replace(".0e", "e")
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, bytes | bytearray | memoryview):
        out.append('"' + base64.b64encode(bytes(value)).decode("ascii") + '"')
    elif isinstance(value, RawJSON):
        out.append(value.data.decode("utf-8", "replace"))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_go_string(str(k)))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as Go JSON")


def go_dumps(value: Any) -> bytes:
    """Encode ``value`` like Go's ``json.Marshal`` (dict order = struct field order)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8", "replace")


def go_map(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return ``d`` with sorted keys (Go marshals map keys sorted); ``None`` stays null."""
    if d is None:
        return None
    return {k: d[k] for k in sorted(d)}


def go_duration(seconds: float) -> int:
    """A ``time.Duration`` as Go marshals it: integer nanoseconds."""
    return round(seconds * 1_000_000_000)


def go_time(ns: int, *, utc: bool = False) -> str:
    """Format a Unix time in nanoseconds like Go's ``time.Time.MarshalJSON``.

    RFC 3339 with up to 9 fractional digits (trailing zeros trimmed) and a zone:
    ``Z`` for a zero offset, else ``+hh:mm``.
    """
    sec, frac = divmod(ns, 1_000_000_000)
    if utc:
        tm = time.gmtime(sec)
        offset = 0
    else:
        tm = time.localtime(sec)
        offset = tm.tm_gmtoff or 0
    s = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
    if frac:
        s += "." + f"{frac:09d}".rstrip("0")
    if offset == 0:
        return s + "Z"
    sign = "+" if offset > 0 else "-"
    offset = abs(offset)
    return f"{s}{sign}{offset // 3600:02d}:{(offset % 3600) // 60:02d}"


def go_time_now() -> str:
    """``time.Now()`` of the client (local zone) as Go marshals it."""
    return go_time(time.time_ns())


def go_time_utc_now() -> str:
    """``time.Now().UTC()`` as Go marshals it."""
    return go_time(time.time_ns(), utc=True)


_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


def parse_go_time(s: str) -> bool:
    """True iff ``s`` parses as Go's RFC 3339 (``time.Time.UnmarshalJSON``)."""
    m = _RFC3339_RE.match(s)
    if not m:
        return False
    mo, d, h, mi, se = (int(m.group(i)) for i in range(2, 7))
    return 1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and se < 60


# --------------------------------------------------------------------------- decoding


class GoDecodeError(Exception):
    """A JSON decoding error whose text mimics Go's ``encoding/json``."""


@dataclass(frozen=True)
class GoStruct:
    """Schema of a Go struct: ``fields`` = ((json_key, kind), ...).

    Kinds: ``"string" "int" "uint64" "uint32" "bool" "float" "time" "duration" "bytes"
    "any"``, ``("ptr", kind)``, ``("slice", kind)``, ``("map", kind)`` or a nested
    :class:`GoStruct`.
    """

    name: str
    fields: tuple[tuple[str, Any], ...]


class _Num:
    __slots__ = ("lit",)

    def __init__(self, lit: str) -> None:
        self.lit = lit


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def go_error_text_for_json(data: bytes, exc: json.JSONDecodeError | ValueError) -> str:
    """Translate a Python JSON syntax error into Go's wording (approximation)."""
    text = data.decode("utf-8", "replace")
    if not text.strip():
        return "unexpected end of JSON input"
    if isinstance(exc, json.JSONDecodeError):
        pos = exc.pos
        if pos >= len(text.rstrip()):
            return "unexpected end of JSON input"
        ch = text[pos]
        c = "'\\''" if ch == "'" else f"'{ch}'"
        msg = exc.msg
        if msg.startswith("Extra data"):
            return f"invalid character {c} after top-level value"
        if msg.startswith("Expecting property name"):
            return f"invalid character {c} looking for beginning of object key string"
        if msg.startswith("Expecting ':'"):
            return f"invalid character {c} after object key"
        if msg.startswith("Expecting ','"):
            return f"invalid character {c} after object key:value pair"
        if msg.startswith("Invalid control character"):
            return f"invalid character {c} in string literal"
        return f"invalid character {c} looking for beginning of value"
    # NaN / Infinity literal rejected by parse_constant
    return f"invalid character '{str(exc)[:1] or '?'}' looking for beginning of value"


def _json_kind(v: Any) -> str:
    if isinstance(v, str):
        return "string"
    if isinstance(v, _Num):
        return "number"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _go_type_name(kind: Any) -> str:
    if isinstance(kind, GoStruct):
        return kind.name
    if isinstance(kind, tuple):
        tag, inner = kind
        if tag == "ptr":
            return "*" + _go_type_name(inner)
        if tag == "slice":
            return "[]" + _go_type_name(inner)
        return "map[string]" + _go_type_name(inner)
    return {
        "string": "string",
        "int": "int",
        "uint64": "uint64",
        "uint32": "fs.FileMode",
        "bool": "bool",
        "float": "float64",
        "time": "time.Time",
        "duration": "time.Duration",
        "bytes": "[]uint8",
        "any": "interface {}",
    }[kind]


class _Ctx:
    def __init__(self, top: str) -> None:
        self.top = top
        self.first_error: str | None = None

    def type_error(self, value: Any, kind: Any, path: list[str], struct: str) -> None:
        if self.first_error is not None:
            return
        what = _json_kind(value)
        if isinstance(value, _Num) and kind in ("int", "uint64", "uint32", "duration"):
            what = f"number {value.lit}"
        short = struct.rsplit(".", 1)[-1]  # reflect.Type.Name(): no package
        where = f"Go struct field {short}.{'.'.join(path)}" if path else "Go value"
        self.first_error = (
            f"json: cannot unmarshal {what} into {where} of type {_go_type_name(kind)}"
        )


_INT_RE = re.compile(r"^-?\d+$")


def _zero(kind: Any) -> Any:
    if isinstance(kind, GoStruct):
        return {k: _zero(sub) for k, sub in kind.fields}
    if isinstance(kind, tuple):
        return None
    return {
        "string": "",
        "int": 0,
        "uint64": 0,
        "uint32": 0,
        "bool": False,
        "float": 0.0,
        "time": "0001-01-01T00:00:00Z",
        "duration": 0,
        "bytes": None,
        "any": None,
    }[kind]


def _plain(v: Any) -> Any:
    if isinstance(v, _Num):
        return int(v.lit) if _INT_RE.match(v.lit) else float(v.lit)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _decode(v: Any, kind: Any, ctx: _Ctx, path: list[str], struct: str, cur: Any) -> Any:
    if v is None:
        return cur  # Go leaves the destination untouched on null
    if isinstance(kind, tuple):
        tag, inner = kind
        if tag == "ptr":
            return _decode(v, inner, ctx, path, struct, _zero(inner))
        if tag == "slice":
            if inner == "bytes":
                pass
            if not isinstance(v, list):
                ctx.type_error(v, kind, path, struct)
                return cur
            return [_decode(x, inner, ctx, path, struct, _zero(inner)) for x in v]
        if not isinstance(v, dict):
            ctx.type_error(v, kind, path, struct)
            return cur
        return {k: _decode(x, inner, ctx, path, struct, _zero(inner)) for k, x in v.items()}
    if isinstance(kind, GoStruct):
        if not isinstance(v, dict):
            ctx.type_error(v, kind, path, struct)
            return cur
        out = dict(cur) if isinstance(cur, dict) else _zero(kind)
        names = [k for k, _ in kind.fields]
        kinds = dict(kind.fields)
        for key, val in v.items():
            target = key if key in kinds else None
            if target is None:
                low = key.lower()
                target = next((n for n in names if n.lower() == low), None)
            if target is None:
                continue
            sub_struct = struct if path else kind.name
            out[target] = _decode(val, kinds[target], ctx, [*path, target], sub_struct, out[target])
        return out
    if kind == "any":
        return _plain(v)
    if kind == "string":
        if not isinstance(v, str):
            ctx.type_error(v, kind, path, struct)
            return cur
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            ctx.type_error(v, kind, path, struct)
            return cur
        return v
    if kind in ("int", "uint64", "uint32", "duration"):
        if not isinstance(v, _Num) or not _INT_RE.match(v.lit):
            ctx.type_error(v, kind, path, struct)
            return cur
        n = int(v.lit)
        lo, hi = {
            "int": (-(2**63), 2**63 - 1),
            "duration": (-(2**63), 2**63 - 1),
            "uint64": (0, 2**64 - 1),
            "uint32": (0, 2**32 - 1),
        }[kind]
        if not lo <= n <= hi:
            ctx.type_error(v, kind, path, struct)
            return cur
        return n
    if kind == "float":
        if not isinstance(v, _Num):
            ctx.type_error(v, kind, path, struct)
            return cur
        return float(v.lit)
    if kind == "time":
        if not isinstance(v, str):
            if ctx.first_error is None:
                ctx.first_error = (
                    "parsing time "
                    + json.dumps(json.dumps(_plain(v)))
                    + ' as "\\"2006-01-02T15:04:05Z07:00\\"": cannot parse '
                    + json.dumps(json.dumps(_plain(v)))
                    + ' as "\\""'
                )
            return cur
        if not parse_go_time(v):
            if ctx.first_error is None:
                quoted = json.dumps(v)
                ctx.first_error = (
                    f"parsing time {json.dumps(quoted)} as "
                    '"\\"2006-01-02T15:04:05Z07:00\\"": cannot parse '
                    f'{json.dumps(quoted)} as "2006-01-02T15:04:05Z07:00"'
                )
            return cur
        return v
    if kind == "bytes":
        if not isinstance(v, str):
            ctx.type_error(v, kind, path, struct)
            return cur
        try:
            return base64.b64decode(v.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            if ctx.first_error is None:
                ctx.first_error = "illegal base64 data at input byte 0"
            return cur
    raise AssertionError(f"unknown kind {kind!r}")


def go_unmarshal(data: bytes, schema: Any) -> Any:
    """Decode ``data`` into ``schema`` like Go's ``json.Unmarshal``.

    Returns plain Python values (dicts keyed by the canonical JSON key, all fields
    present with Go zero values).  Raises :class:`GoDecodeError` with Go's wording.
    """
    text = data.decode("utf-8", "replace")
    try:
        raw = json.loads(
            text,
            parse_int=_Num,
            parse_float=_Num,
            parse_constant=_reject_constant,
        )
    except (json.JSONDecodeError, ValueError) as exc:
        raise GoDecodeError(go_error_text_for_json(data, exc)) from None
    ctx = _Ctx(schema.name if isinstance(schema, GoStruct) else "")
    name = schema.name if isinstance(schema, GoStruct) else ""
    result = _decode(raw, schema, ctx, [], name, _zero(schema))
    if ctx.first_error is not None:
        raise GoDecodeError(ctx.first_error)
    return result
