"""Schedule expressions as upstream's cron library accepts them, and their next times.

Accepted: five fields ``minute hour day-of-month month day-of-week`` (numbers,
``*``/``?``, ranges ``a-b``, steps ``/n``, lists ``a,b``, month and weekday names),
optionally prefixed with ``TZ=<zone>`` or ``CRON_TZ=<zone>``; and the descriptors
``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
``@hourly`` and ``@every <Go duration>``. Errors read like upstream's.

Times are computed on the wall clock of the schedule's zone (the server's local
zone unless ``TZ=`` names one); a wall time a daylight-saving change skips is
skipped, as upstream does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class CronError(ValueError):
    """An expression upstream's parser refuses; the text is its message."""


class Schedule(Protocol):
    """When a parsed expression fires."""

    def next(self, after: datetime, local: tzinfo) -> datetime | None:
        """The first activation strictly after ``after`` (aware), or None for never."""


@dataclass(frozen=True)
class _Bounds:
    low: int
    high: int
    names: dict[str, int] | None = None


_MINUTES = _Bounds(0, 59)
_HOURS = _Bounds(0, 23)
_DOM = _Bounds(1, 31)
_MONTHS = _Bounds(
    1,
    12,
    {
        name: i + 1
        for i, name in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
        )
    },
)
_DOW = _Bounds(
    0, 6, {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
)

_INT64_MAX = 2**63 - 1
_ATOI = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class _Field:
    """The values a field allows and whether it was written with ``*``/``?``."""

    values: frozenset[int]
    star: bool = False


def _go_quote(text: str) -> str:
    """Double-quoted like Go's ``strconv.Quote`` (for the texts we meet)."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _atoi(expr: str) -> int:
    """Go's ``strconv.Atoi`` followed by the library's check for negatives."""
    if not _ATOI.fullmatch(expr):
        raise CronError(
            f"failed to parse int from {expr}: strconv.Atoi: parsing {_go_quote(expr)}: "
            "invalid syntax"
        )
    num = int(expr)
    if not -_INT64_MAX - 1 <= num <= _INT64_MAX:
        raise CronError(
            f"failed to parse int from {expr}: strconv.Atoi: parsing {_go_quote(expr)}: "
            "value out of range"
        )
    if num < 0:
        raise CronError(f"negative number ({num}) not allowed: {expr}")
    return num


def _int_or_name(expr: str, bounds: _Bounds) -> int:
    if bounds.names is not None and expr.lower() in bounds.names:
        return bounds.names[expr.lower()]
    return _atoi(expr)


def _range(expr: str, bounds: _Bounds) -> _Field:
    """``number | number-number [/step]``, ``*`` or ``?`` (with optional step)."""
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    star = False
    if low_and_high[0] in ("*", "?"):
        start, end, star = bounds.low, bounds.high, True
    else:
        start = _int_or_name(low_and_high[0], bounds)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _int_or_name(low_and_high[1], bounds)
        else:
            raise CronError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _atoi(range_and_step[1])
        if single:
            end = bounds.high
        if step > 1:
            star = False
    else:
        raise CronError(f"too many slashes: {expr}")
    if start < bounds.low:
        raise CronError(f"beginning of range ({start}) below minimum ({bounds.low}): {expr}")
    if end > bounds.high:
        raise CronError(f"end of range ({end}) above maximum ({bounds.high}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise CronError(f"step of range should be a positive number: {expr}")
    return _Field(frozenset(range(start, end + 1, step)), star)


def _field(text: str, bounds: _Bounds) -> _Field:
    """A comma-separated list of ranges (empty items are ignored, as upstream)."""
    values: set[int] = set()
    star = False
    for part in (p for p in text.split(",") if p):
        parsed = _range(part, bounds)
        values |= parsed.values
        star = star or parsed.star
    return _Field(frozenset(values), star)


def _all(bounds: _Bounds) -> _Field:
    return _Field(frozenset(range(bounds.low, bounds.high + 1)), True)


def _one(value: int) -> _Field:
    return _Field(frozenset({value}))


@dataclass(frozen=True)
class SpecSchedule:
    """A crontab line: the allowed minutes, hours, days, months and weekdays."""

    minute: _Field
    hour: _Field
    dom: _Field
    month: _Field
    dow: _Field
    zone: tzinfo | None = None  # None: the server's local zone

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.dom.values
        dow = (t.isoweekday() % 7) in self.dow.values
        if self.dom.star or self.dow.star:
            return dom and dow
        return dom or dow

    def next(self, after: datetime, local: tzinfo) -> datetime | None:
        zone = self.zone or local
        # Search on the zone's wall clock, from the next whole second on.
        t = after.astimezone(zone).replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        year_limit = t.year + 5
        added = False
        while t.year <= year_limit:
            if t.month not in self.month.values:
                if not added:
                    added = True
                    t = t.replace(day=1, hour=0, minute=0, second=0)
                t = _next_month(t)
                continue
            if not self._day_matches(t):
                if not added:
                    added = True
                    t = t.replace(hour=0, minute=0, second=0)
                t += timedelta(days=1)
                continue
            if t.hour not in self.hour.values:
                if not added:
                    added = True
                    t = t.replace(minute=0, second=0)
                t += timedelta(hours=1)
                continue
            if t.minute not in self.minute.values:
                if not added:
                    added = True
                    t = t.replace(second=0)
                t += timedelta(minutes=1)
                continue
            if t.second != 0:
                added = True
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            moment = t.replace(tzinfo=zone)
            if moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != t:
                # This wall time does not exist (clocks jumped forward): skip it.
                added = True
                t += timedelta(minutes=1)
                continue
            return moment.astimezone(UTC)
        return None


def _next_month(t: datetime) -> datetime:
    if t.month == 12:
        return t.replace(year=t.year + 1, month=1)
    return t.replace(month=t.month + 1)


@dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: a fixed delay (whole seconds, at least one)."""

    delay: timedelta

    def next(self, after: datetime, local: tzinfo) -> datetime | None:
        return after.replace(microsecond=0) + self.delay


# --- Go durations ---------------------------------------------------------------------------

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5
    "μs": 1_000,  # U+03BC
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration (``1h30m``, ``90s``, ``1.5h``), as ``time.ParseDuration``."""
    orig = text
    invalid = CronError(f"time: invalid duration {_go_quote(orig)}")
    neg = False
    if text[:1] in ("-", "+"):
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if text == "":
        raise invalid
    total = 0
    while text:
        if not (text[0] == "." or (text[0].isdigit() and text[0].isascii())):
            raise invalid
        digits = re.match(r"[0-9]*", text)
        assert digits is not None
        whole_text = digits.group(0)
        text = text[len(whole_text) :]
        whole = int(whole_text) if whole_text else 0
        if whole > _INT64_MAX:
            raise invalid
        frac_text = ""
        if text.startswith("."):
            frac_match = re.match(r"[0-9]*", text[1:])
            assert frac_match is not None
            frac_text = frac_match.group(0)
            text = text[1 + len(frac_text) :]
        if not whole_text and not frac_text:
            raise invalid
        unit_match = re.match(r"[^0-9.]*", text)
        assert unit_match is not None
        unit = unit_match.group(0)
        if not unit:
            raise CronError(f"time: missing unit in duration {_go_quote(orig)}")
        text = text[len(unit) :]
        scale = _UNITS_NS.get(unit)
        if scale is None:
            raise CronError(f"time: unknown unit {_go_quote(unit)} in duration {_go_quote(orig)}")
        if whole > _INT64_MAX // scale:
            raise invalid
        value = whole * scale
        if frac_text:
            value += int(int(frac_text) * (scale / 10 ** len(frac_text)))
        total += value
        if total > _INT64_MAX:
            raise invalid
    return -total if neg else total


def _every(duration_ns: int) -> EverySchedule:
    """Less than a second counts as one; fractions of a second are dropped."""
    return EverySchedule(timedelta(seconds=max(duration_ns // 1_000_000_000, 1)))


_DESCRIPTORS: dict[str, tuple[_Field, _Field, _Field, _Field, _Field]] = {
    "@yearly": (_one(0), _one(0), _one(1), _one(1), _all(_DOW)),
    "@annually": (_one(0), _one(0), _one(1), _one(1), _all(_DOW)),
    "@monthly": (_one(0), _one(0), _one(1), _all(_MONTHS), _all(_DOW)),
    "@weekly": (_one(0), _one(0), _all(_DOM), _all(_MONTHS), _one(0)),
    "@daily": (_one(0), _one(0), _all(_DOM), _all(_MONTHS), _all(_DOW)),
    "@midnight": (_one(0), _one(0), _all(_DOM), _all(_MONTHS), _all(_DOW)),
    "@hourly": (_one(0), _all(_HOURS), _all(_DOM), _all(_MONTHS), _all(_DOW)),
}


def _descriptor(spec: str, zone: tzinfo | None) -> Schedule:
    fields = _DESCRIPTORS.get(spec)
    if fields is not None:
        return SpecSchedule(*fields, zone=zone)
    every = "@every "
    if spec.startswith(every):
        try:
            duration = parse_go_duration(spec[len(every) :])
        except CronError as exc:
            raise CronError(f"failed to parse duration {spec}: {exc}") from None
        return _every(duration)
    raise CronError(f"unrecognized descriptor: {spec}")


def _zone(name: str) -> tzinfo:
    """Go's ``time.LoadLocation``: ``""``/``UTC`` is UTC, ``Local`` the local zone."""
    if name in ("", "UTC"):
        return UTC
    if name == "Local":
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        raise CronError(f"provided bad location {name}: unknown time zone {name}") from None


def parse(spec: str) -> Schedule:
    """Parse a schedule expression; :class:`CronError` says what is wrong.

    May read time zone files (``TZ=``): call it off the event loop.
    """
    if not spec:
        raise CronError("empty spec string")
    zone: tzinfo | None = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space = spec.find(" ")
        eq = spec.find("=")
        if space < 0:
            raise CronError(
                f"provided bad location {spec[eq + 1 :]}: the time zone must be followed by "
                "a space and the schedule"
            )
        zone = _zone(spec[eq + 1 : space])
        spec = spec[space:].strip()
    if spec.startswith("@"):
        return _descriptor(spec, zone)
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    return SpecSchedule(
        minute=_field(fields[0], _MINUTES),
        hour=_field(fields[1], _HOURS),
        dom=_field(fields[2], _DOM),
        month=_field(fields[3], _MONTHS),
        dow=_field(fields[4], _DOW),
        zone=zone,
    )


def local_zone() -> tzinfo:
    """The server's local time zone (``TZ``, else ``/etc/localtime``); reads files."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ValueError, OSError, ZoneInfoNotFoundError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        pass
    fallback = datetime.now().astimezone().tzinfo
    return fallback if fallback is not None else UTC
