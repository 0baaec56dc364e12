"""Go durations, day-durations and port ranges."""

from __future__ import annotations

import pytest

from rportd.config import (
    format_go_duration,
    parse_day_duration,
    parse_go_duration,
    parse_port_ranges,
    port_pool,
)
from rportd.config.types import parse_extended_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("+0", 0.0),
        ("-0", 0.0),
        ("0s", 0.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("1h2m3.5s", 3723.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1us", 1e-6),
        ("1\u00b5s", 1e-6),
        ("1\u03bcs", 1e-6),
        ("10ns", 1e-8),
        ("-1.5h", -5400.0),
        ("+2s", 2.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1h1h", 7200.0),
        ("168h", 604800.0),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("x", 'time: invalid duration "x"'),
        ("-", 'time: invalid duration "-"'),
        (".", 'time: invalid duration "."'),
        ("s", 'time: invalid duration "s"'),
        ("1", 'time: missing unit in duration "1"'),
        ("10", 'time: missing unit in duration "10"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("1 s", 'time: unknown unit " s" in duration "1 s"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
    ],
)
def test_parse_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_go_duration(text)
    assert str(err.value) == message


def test_numbers_are_nanoseconds() -> None:
    assert parse_go_duration(1_000_000_000) == 1.0
    assert parse_go_duration(5) == pytest.approx(5e-9)
    assert parse_go_duration(2.5e9) == 2.5
    with pytest.raises(ValueError):
        parse_go_duration(True)


def test_extended_duration_days_and_weeks() -> None:
    assert parse_extended_duration("7d") == 7 * 86400
    assert parse_extended_duration("1w") == 7 * 86400
    assert parse_extended_duration("1d12h") == 36 * 3600
    assert parse_extended_duration("30m") == 1800
    with pytest.raises(ValueError, match="unknown unit"):
        parse_extended_duration("1y")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (60, "1m0s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (0.3, "300ms"),
        (0.0015, "1.5ms"),
        (2.5e-6, "2.5\u00b5s"),
        (5e-9, "5ns"),
        (3723.5, "1h2m3.5s"),
        (168 * 3600, "168h0m0s"),
        (-90, "-1m30s"),
    ],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("12h", 12 * 3600), ("1D", 86400), ("2H", 7200), (" 3 d", 3 * 86400)],
)
def test_parse_day_duration(text: str, seconds: float) -> None:
    assert parse_day_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "must not be empty value"),
        ("d", "must include value and units"),
        ("7m", "must include units of either d (=days) or h (=hours)"),
        ("1.5d", "must be simple value"),
        ("-1d", "must be simple value"),
    ],
)
def test_parse_day_duration_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_day_duration(text)
    assert fragment in str(err.value)


def test_parse_port_ranges() -> None:
    assert parse_port_ranges(["22"]) == {22}
    assert parse_port_ranges(["20000-20002", "22"]) == {20000, 20001, 20002, 22}
    assert parse_port_ranges(["80,443, 5000-5001"]) == {80, 443, 5000, 5001}
    assert parse_port_ranges([" 1 - 3 "]) == {1, 2, 3}
    assert parse_port_ranges([]) == set()
    assert parse_port_ranges([""]) == set()
    assert len(parse_port_ranges(["20000-30000"])) == 10001
    assert parse_port_ranges(["0-65535"]) == set(range(65536))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("abc", 'can\'t parse port number "abc"'),
        ("70000", "invalid port number: 70000"),
        ("30-20", "invalid port range 30-20"),
        ("1-2-3", "incorrect range 1-2-3"),
        ("1-", "can't parse port number"),
    ],
)
def test_parse_port_ranges_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_port_ranges([spec])
    assert fragment in str(err.value)


def test_port_pool() -> None:
    pool = port_pool(["20000-30000"], ["1-1024"])
    assert isinstance(pool, frozenset)
    assert len(pool) == 10001
    assert port_pool(["1000-1030"], ["1-1024"]) == frozenset(range(1025, 1031))
    assert port_pool(["80"], ["80"]) == frozenset()
    assert port_pool(["20000-20005"], []) == frozenset(range(20000, 20006))
