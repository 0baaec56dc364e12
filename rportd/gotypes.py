"""Go wire conventions: RFC 3339 timestamps, durations and JSON encoding.

The real client and the web UI were written against Go's ``encoding/json`` and
``time`` packages; these helpers reproduce their formats exactly.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"

_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"\s*([Zz]|[+-]\d{2}:?\d{2})?$"
)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """Format like Go's ``time.Time`` JSON encoding (RFC 3339, trimmed nanoseconds)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    base = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        base += "." + f"{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return base + "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{base}{sign}{total // 3600:02d}:{total % 3600 // 60:02d}"


def parse_time(text: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp (also the DB form ``YYYY-MM-DD HH:MM:SS+00:00``).

    Nanoseconds are truncated to microseconds; a missing zone means UTC.
    Returns ``None`` for empty input and raises ``ValueError`` for garbage.
    """
    if not text:
        return None
    m = _RFC3339_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid timestamp {text!r}: expected RFC 3339")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz: timezone = UTC
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        tz_offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        tz = timezone(sign * tz_offset)
    return datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
    )


def format_db_time(value: datetime | None) -> str | None:
    """Format a timestamp the way the Go SQLite driver stores it."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "+00:00"


class _GoEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return format_time(o)
        to_json = getattr(o, "to_json", None)
        if callable(to_json):
            return to_json()
        return super().default(o)


_ENCODER = _GoEncoder(ensure_ascii=False, separators=(",", ":"))


def go_dumps(value: Any) -> str:
    """Serialise like Go's ``encoding/json`` (compact; ``<``, ``>``, ``&`` escaped)."""
    text = _ENCODER.encode(value)
    if "<" in text or ">" in text or "&" in text:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text


def go_dumpb(value: Any) -> bytes:
    """Like :func:`go_dumps`, as UTF-8 bytes."""
    return go_dumps(value).encode()


def json_kind(value: Any) -> str:
    """How Go's ``json.Unmarshal`` names a JSON value's kind in its type errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "value"


def ci_get(obj: dict[str, Any], key: str, default: Any = None) -> Any:
    """Look up ``key`` case-insensitively, as Go's JSON decoder matches struct fields."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if k.lower() == lowered:
            return v
    return default
