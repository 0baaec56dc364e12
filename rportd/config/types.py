"""Value types of the configuration: Go durations, day-durations and port ranges."""

from __future__ import annotations

from collections.abc import Iterable

_NS_PER_SECOND = 1_000_000_000
_MAX_DURATION_NS = (1 << 63) - 1

# Units of Go's time.ParseDuration, in nanoseconds.
_GO_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek small letter mu
    "ms": 1_000_000,
    "s": _NS_PER_SECOND,
    "m": 60 * _NS_PER_SECOND,
    "h": 3600 * _NS_PER_SECOND,
}

# Extra units accepted by durations that allow days and weeks ("7d", "1w").
_EXTENDED_UNITS: dict[str, int] = {
    **_GO_UNITS,
    "d": 24 * 3600 * _NS_PER_SECOND,
    "w": 7 * 24 * 3600 * _NS_PER_SECOND,
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _invalid(orig: str) -> ValueError:
    return ValueError(f"time: invalid duration {_quote(orig)}")


def _parse_duration_ns(text: str, units: dict[str, int]) -> int:
    """Parse a Go duration string into integer nanoseconds (Go's algorithm)."""
    orig = text
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise _invalid(orig)
    total = 0
    while s:
        if not (s[0] == "." or (s[0].isascii() and s[0].isdigit())):
            raise _invalid(orig)
        # Integer part.
        i = 0
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            i += 1
        pre = i > 0
        whole = int(s[:i]) if pre else 0
        if whole > _MAX_DURATION_NS + 1:
            raise _invalid(orig)
        s = s[i:]
        # Fraction part.
        frac = 0
        scale = 1.0
        post = False
        if s and s[0] == ".":
            s = s[1:]
            j = 0
            overflow = False
            while j < len(s) and s[j].isascii() and s[j].isdigit():
                if not overflow:
                    if frac > (_MAX_DURATION_NS) // 10:
                        overflow = True
                    else:
                        frac = frac * 10 + int(s[j])
                        scale *= 10
                j += 1
            post = j > 0
            s = s[j:]
        if not pre and not post:
            raise _invalid(orig)
        # Unit.
        k = 0
        while k < len(s) and not (s[k] == "." or (s[k].isascii() and s[k].isdigit())):
            k += 1
        if k == 0:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        unit_name = s[:k]
        s = s[k:]
        unit = units.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_quote(unit_name)} in duration {_quote(orig)}")
        if whole > (1 << 63) // unit:
            raise _invalid(orig)
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > 1 << 63:
                raise _invalid(orig)
        total += value
        if total > 1 << 63:
            raise _invalid(orig)
    if neg:
        return -total
    if total > _MAX_DURATION_NS:
        raise _invalid(orig)
    return total


def parse_go_duration(value: str | int | float) -> float:
    """Parse a Go duration ("300ms", "1.5h", "2h45m", "0") into seconds.

    A number (TOML integer or float) is read as nanoseconds, as Go's config decoder does.
    Raises ``ValueError`` with Go's message (``time: invalid duration "x"``).
    """
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {_quote(str(value).lower())}")
    if isinstance(value, int | float):
        return float(int(value)) / _NS_PER_SECOND
    return _parse_duration_ns(value, _GO_UNITS) / _NS_PER_SECOND


def parse_extended_duration(value: str | int | float) -> float:
    """Parse a Go duration that may also use "d" (days) and "w" (weeks) units, into seconds."""
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {_quote(str(value).lower())}")
    if isinstance(value, int | float):
        return float(int(value)) / _NS_PER_SECOND
    return _parse_duration_ns(value, _EXTENDED_UNITS) / _NS_PER_SECOND


def parse_day_duration(text: str) -> float:
    """Parse a "<N>d" or "<N>h" value ("7d", "12h") into seconds.

    Raises ``ValueError`` with upstream's wording (without the key name).
    """
    if len(text) == 0:
        raise ValueError("must not be empty value")
    if len(text) == 1:
        raise ValueError("must include value and units, use suffix d (=days) or h (=hours)")
    unit = text[-1].lower()
    if unit not in ("d", "h"):
        raise ValueError("must include units of either d (=days) or h (=hours)")
    number = text[:-1].strip()
    if not number.isascii() or not number.isdigit():
        raise ValueError(f"must be simple value: invalid syntax {_quote(number)}")
    amount = int(number)
    return float(amount * (86400 if unit == "d" else 3600))


def format_go_duration(seconds: float) -> str:
    """Format seconds like Go's ``time.Duration.String()`` ("1m0s", "1.5s", "300ms")."""
    ns = round(seconds * _NS_PER_SECOND)
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    sign = "-" if neg else ""
    if u < _NS_PER_SECOND:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_frac(u, 3)}\u00b5s"
        return f"{sign}{_frac(u, 6)}ms"
    secs_text = _frac(u % (60 * _NS_PER_SECOND), 9) + "s"
    minutes_total = u // (60 * _NS_PER_SECOND)
    if minutes_total == 0:
        return sign + secs_text
    hours, minutes = divmod(minutes_total, 60)
    if hours == 0:
        return f"{sign}{minutes}m{secs_text}"
    return f"{sign}{hours}h{minutes}m{secs_text}"


def _frac(value: int, digits: int) -> str:
    """Render ``value / 10**digits`` without trailing zeros (Go's fmtFrac/fmtInt)."""
    whole, frac = divmod(value, 10**digits)
    if frac == 0:
        return str(whole)
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.lstrip("+-").isdigit():
        raise ValueError(f"can't parse port number {_quote(text)}")
    number = int(text)
    if number < 0 or number > 65535:
        raise ValueError(f"invalid port number: {number}")
    return number


def parse_port_ranges(ranges: Iterable[str]) -> set[int]:
    """Expand port specs ("20000-30000", "22", "80,443,5000-5999") into a set of ports.

    Raises ``ValueError`` describing the first bad entry.
    """
    result: set[int] = set()
    for entry in ranges:
        for item in str(entry).split(","):
            item = item.strip()
            if not item:
                continue
            parts = [part.strip() for part in item.split("-")]
            if len(parts) == 1:
                result.add(_parse_port(parts[0]))
            elif len(parts) == 2:
                start = _parse_port(parts[0])
                end = _parse_port(parts[1])
                if start > end:
                    raise ValueError(f"invalid port range {item}")
                result.update(range(start, end + 1))
            else:
                raise ValueError(f"can't parse port range: incorrect range {item}")
    return result


def port_pool(used: Iterable[str], excluded: Iterable[str]) -> frozenset[int]:
    """Ports available for tunnels: ``used`` minus ``excluded``."""
    return frozenset(parse_port_ranges(used) - parse_port_ranges(excluded))
