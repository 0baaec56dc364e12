"""Schedule expressions: what upstream's cron parser accepts, its errors, and next times."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from rportd.schedules.cron import CronError, parse, parse_go_duration

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def runs(spec: str, after: str, count: int, local: object = UTC) -> list[str]:
    schedule = parse(spec)
    moment = at(after)
    out = []
    for _ in range(count):
        nxt = schedule.next(moment, local)  # type: ignore[arg-type]
        assert nxt is not None
        out.append(nxt.isoformat())
        moment = nxt
    return out


@pytest.mark.parametrize(
    "spec",
    [
        "* * * * *",
        "*/5 0-6 1,15 jan-MAR mon-fri",
        "0 0 * * ?",
        "5/10 * * * *",
        "0 12 * * SUN",
        "  1  2  3  4  5 ",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@every 1h30m",
        "@every 1.5s",
        "TZ=Europe/Berlin 0 6 * * *",
        "CRON_TZ=UTC @hourly",
    ],
)
def test_accepted(spec: str) -> None:
    parse(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty spec string"),
        ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
        ("0 * * * * *", "expected exactly 5 fields, found 6: [0 * * * * *]"),
        ("60 * * * *", "end of range (60) above maximum (59): 60"),
        ("* 24 * * *", "end of range (24) above maximum (23): 24"),
        ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
        ("* * * 13 *", "end of range (13) above maximum (12): 13"),
        ("* * * * 7", "end of range (7) above maximum (6): 7"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
        ("1/2/3 * * * *", "too many slashes: 1/2/3"),
        ("a * * * *", 'failed to parse int from a: strconv.Atoi: parsing "a": invalid syntax'),
        ("* * * * */-1", "negative number (-1) not allowed: -1"),
        (
            "* * * foo *",
            'failed to parse int from foo: strconv.Atoi: parsing "foo": invalid syntax',
        ),
        ("@often", "unrecognized descriptor: @often"),
        ("@every", "unrecognized descriptor: @every"),
        (
            "@every 1x",
            'failed to parse duration @every 1x: time: unknown unit "x" in duration "1x"',
        ),
        ("@every 10", 'failed to parse duration @every 10: time: missing unit in duration "10"'),
        ("@every soon", 'failed to parse duration @every soon: time: invalid duration "soon"'),
        (
            "TZ=Nowhere/Land * * * * *",
            "provided bad location Nowhere/Land: unknown time zone Nowhere/Land",
        ),
    ],
)
def test_refused_with_upstreams_message(spec: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(spec)
    assert str(caught.value) == message


def test_go_durations() -> None:
    assert parse_go_duration("1h30m") == 5400 * 10**9
    assert parse_go_duration("1.5h") == 5400 * 10**9
    assert parse_go_duration("-1m") == -60 * 10**9
    assert parse_go_duration("0") == 0
    assert parse_go_duration("250ms") == 250 * 10**6
    assert parse_go_duration("3µs") == 3000
    for bad in ("", "+", ".s", "1", "h"):
        with pytest.raises(CronError):
            parse_go_duration(bad)


def test_every_steps_in_whole_seconds() -> None:
    assert runs("@every 1h30m", "2024-05-06T10:00:00.75+00:00", 2) == [
        "2024-05-06T11:30:00+00:00",
        "2024-05-06T13:00:00+00:00",
    ]
    # under a second counts as one second; fractions of a second are dropped
    assert runs("@every 200ms", "2024-05-06T10:00:00+00:00", 2)[1] == "2024-05-06T10:00:02+00:00"
    assert runs("@every 2.7s", "2024-05-06T10:00:00+00:00", 1) == ["2024-05-06T10:00:02+00:00"]


def test_next_times_of_crontab_lines() -> None:
    assert runs("*/15 * * * *", "2024-05-06T10:07:30+00:00", 3) == [
        "2024-05-06T10:15:00+00:00",
        "2024-05-06T10:30:00+00:00",
        "2024-05-06T10:45:00+00:00",
    ]
    # exactly on a matching minute: the next one, never the same instant
    assert runs("0 * * * *", "2024-05-06T10:00:00+00:00", 1) == ["2024-05-06T11:00:00+00:00"]
    # 2024-05-06 is a Monday
    assert runs("30 6 * * mon", "2024-05-06T07:00:00+00:00", 1) == ["2024-05-13T06:30:00+00:00"]
    assert runs("0 0 1 */3 *", "2024-05-06T00:00:00+00:00", 3) == [
        "2024-07-01T00:00:00+00:00",
        "2024-10-01T00:00:00+00:00",
        "2025-01-01T00:00:00+00:00",
    ]
    # day of month and day of week both restricted: either matches (Friday or the 13th)
    assert runs("0 0 13 * fri", "2024-05-06T00:00:00+00:00", 3) == [
        "2024-05-10T00:00:00+00:00",
        "2024-05-13T00:00:00+00:00",
        "2024-05-17T00:00:00+00:00",
    ]
    # with a star in one of them, both must match (a Friday the 13th)
    assert runs("0 0 13 * ?", "2024-05-06T00:00:00+00:00", 1) == ["2024-05-13T00:00:00+00:00"]
    assert runs("0 0 29 2 *", "2024-03-01T00:00:00+00:00", 1) == ["2028-02-29T00:00:00+00:00"]
    assert runs("@weekly", "2024-05-06T00:00:00+00:00", 1) == ["2024-05-12T00:00:00+00:00"]
    assert runs("@monthly", "2024-12-06T00:00:00+00:00", 1) == ["2025-01-01T00:00:00+00:00"]
    assert runs("@yearly", "2024-12-06T00:00:00+00:00", 1) == ["2025-01-01T00:00:00+00:00"]


def test_never_matching_line_never_runs() -> None:
    assert parse("0 0 30 2 *").next(at("2024-01-01T00:00:00+00:00"), UTC) is None


def test_local_zone_and_tz_prefix_with_daylight_saving() -> None:
    # The server's zone is used unless the expression names one.
    assert runs("0 6 * * *", "2024-07-01T00:00:00+00:00", 1, BERLIN) == [
        "2024-07-01T04:00:00+00:00"
    ]
    assert runs("TZ=Europe/Berlin 0 6 * * *", "2024-01-10T00:00:00+00:00", 1) == [
        "2024-01-10T05:00:00+00:00"
    ]
    # 02:30 does not exist in Berlin on 2024-03-31: that day is skipped.
    assert runs("TZ=Europe/Berlin 30 2 * * *", "2024-03-30T12:00:00+00:00", 2) == [
        "2024-04-01T00:30:00+00:00",
        "2024-04-02T00:30:00+00:00",
    ]
    # an @every schedule does not care about zones
    assert runs("TZ=Europe/Berlin @every 1m", "2024-03-31T00:59:30+00:00", 1) == [
        "2024-03-31T01:00:30+00:00"
    ]
