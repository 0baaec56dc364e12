"""Tests for the list-query engine (rportd.api.query, api.md §3)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from multidict import MultiDict, MultiDictProxy

from rportd.api.errors import ApiError
from rportd.api.query import (
    FilterOption,
    ListOptions,
    ListSpec,
    Pagination,
    SortOption,
    filter_items,
    paginate,
    parse_datetime,
    parse_list_options,
    select_fields,
    sort_items,
    sql_limit,
    sql_order,
    sql_where,
)

# --------------------------------------------------------------------------- helpers

CLIENTS = ListSpec(
    sort_fields=frozenset({"id", "name", "os", "hostname", "version"}),
    default_sort=(SortOption("id", False),),
    single_sort=True,
    filter_fields=frozenset({"id", "name", "os", "tags", "labels", "num_cpus", "hostname"}),
    fields={"clients": frozenset({"id", "name", "hostname", "os", "tags"})},
    default_fields={"clients": ("id", "name", "hostname")},
    page_default=50,
    page_max=500,
)

JOB_FIELDS = frozenset({"jid", "status", "finished_at", "client_id", "started_at"})
JOBS = ListSpec(
    sort_fields=frozenset({"jid", "started_at", "finished_at", "status"}),
    default_sort=(SortOption("finished_at", True), SortOption("jid", False)),
    filter_fields=frozenset(
        {"jid", "status", "client_id"}
        | {
            f"{c}[{op}]"
            for c in ("started_at", "finished_at")
            for op in ("gt", "lt", "since", "until")
        }
    ),
    fields={"jobs": JOB_FIELDS, "result": frozenset({"stdout", "stderr", "summary"})},
    default_fields={"jobs": ("jid", "status", "finished_at"), "result": ("summary",)},
    resource_aliases={"commands": "jobs", "scripts": "jobs"},
    page_default=100,
    page_max=1000,
)

NO_PAGE = ListSpec(sort_fields=frozenset({"id"}), filter_fields=frozenset({"id"}))


def q(*pairs: tuple[str, str]) -> MultiDictProxy[str]:
    """An aiohttp-like ``request.query``."""
    return MultiDictProxy(MultiDict(pairs))


def titles(exc: pytest.ExceptionInfo[ApiError]) -> list[str]:
    return [item.title for item in exc.value.items]


def parse_err(spec: ListSpec, *pairs: tuple[str, str]) -> list[str]:
    with pytest.raises(ApiError) as exc:
        parse_list_options(q(*pairs), spec)
    assert exc.value.status == 400
    assert exc.value.title == exc.value.items[0].title
    return titles(exc)


def getter(item: Mapping[str, Any], name: str) -> object:
    return item.get(name)


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def run_filter(items: list[dict[str, Any]], spec: ListSpec, *pairs: tuple[str, str]) -> list[str]:
    opts = parse_list_options(q(*pairs), spec)
    return ids(filter_items(items, opts.filters, getter))


# --------------------------------------------------------------------------- sorting


def test_default_sort_when_none_given() -> None:
    opts = parse_list_options(q(), JOBS)
    assert opts.sorts == [SortOption("finished_at", True), SortOption("jid", False)]


def test_repeated_sort_params_in_order() -> None:
    opts = parse_list_options(q(("sort", "status"), ("sort", "-jid")), JOBS)
    assert opts.sorts == [SortOption("status", False), SortOption("jid", True)]


def test_sort_whitespace_and_empty_values_skipped() -> None:
    opts = parse_list_options(q(("sort", "  -jid "), ("sort", "")), JOBS)
    assert opts.sorts == [SortOption("jid", True)]


def test_plain_mapping_query_accepted() -> None:
    opts = parse_list_options({"sort": "-status", "page[limit]": "5"}, JOBS)
    assert opts.sorts == [SortOption("status", True)]
    assert opts.pagination == Pagination(5, 0)


def test_unsupported_sort_field() -> None:
    assert parse_err(JOBS, ("sort", "-foo")) == ["unsupported sort field 'foo'"]


def test_sort_is_not_comma_separated() -> None:
    assert parse_err(JOBS, ("sort", "jid,status")) == ["unsupported sort field 'jid,status'"]


def test_single_sort_only() -> None:
    assert parse_err(CLIENTS, ("sort", "name"), ("sort", "id")) == [
        "Only one sort field is supported for clients."
    ]
    assert parse_list_options(q(("sort", "-name")), CLIENTS).sorts == [SortOption("name", True)]
    assert parse_list_options(q(), CLIENTS).sorts == [SortOption("id", False)]


def test_single_sort_custom_message() -> None:
    spec = ListSpec(
        sort_fields=frozenset({"a", "b"}),
        single_sort=True,
        single_sort_message="Only one sort field is supported for problems.",
    )
    assert parse_err(spec, ("sort", "a"), ("sort", "b")) == [
        "Only one sort field is supported for problems."
    ]


def test_sort_items_multi_key_stable_case_insensitive_none_first() -> None:
    items: list[dict[str, Any]] = [
        {"id": "1", "name": "beta", "os": "linux"},
        {"id": "2", "name": None, "os": "Windows"},
        {"id": "3", "name": "Alpha", "os": "linux"},
        {"id": "4", "name": "alpha", "os": "windows"},
        {"id": "5", "name": "Beta", "os": "Linux"},
    ]
    assert ids(sort_items(items, [SortOption("name", False)], getter)) == ["2", "3", "4", "1", "5"]
    assert ids(sort_items(items, [SortOption("name", True)], getter)) == ["1", "5", "3", "4", "2"]
    by_os_then_name_desc = [SortOption("os", False), SortOption("name", True)]
    assert ids(sort_items(items, by_os_then_name_desc, getter)) == ["1", "5", "3", "4", "2"]
    # the input list is not modified
    assert ids(items) == ["1", "2", "3", "4", "5"]


def test_sort_items_numbers_and_datetimes() -> None:
    base = datetime(2024, 5, 1, tzinfo=UTC)
    items: list[dict[str, Any]] = [
        {"id": "a", "n": 10, "t": base + timedelta(hours=2)},
        {"id": "b", "n": 9, "t": None},
        {"id": "c", "n": 100, "t": datetime(2024, 5, 1, 1, 0)},  # naive = UTC
    ]
    assert ids(sort_items(items, [SortOption("n", False)], getter)) == ["b", "a", "c"]
    assert ids(sort_items(items, [SortOption("t", False)], getter)) == ["b", "c", "a"]
    assert ids(sort_items(items, [SortOption("t", True)], getter)) == ["a", "c", "b"]


# --------------------------------------------------------------------------- filter parsing


def test_filter_parse_values_trimmed_and_or_list() -> None:
    opts = parse_list_options(q(("filter[os]", " linux , windows ")), CLIENTS)
    assert opts.filters == [FilterOption(("os",), "eq", ("linux", "windows"), False)]


def test_filter_parse_or_and_blocks() -> None:
    opts = parse_list_options(q(("filter[tags]", "and(a, b)"), ("filter[os]", "or(x,y)")), CLIENTS)
    assert opts.filters == [
        FilterOption(("tags",), "eq", ("a", "b"), True),
        FilterOption(("os",), "eq", ("x", "y"), False),
    ]


def test_filter_parse_repeated_key_merges_values() -> None:
    opts = parse_list_options(q(("filter[os]", "linux"), ("filter[os]", "mac")), CLIENTS)
    assert opts.filters == [FilterOption(("os",), "eq", ("linux", "mac"), False)]


def test_filter_parse_pipe_columns_and_operator() -> None:
    spec = ListSpec(filter_fields=frozenset({"name", "hostname", "started_at[gt]"}))
    opts = parse_list_options(
        q(("filter[name|hostname]", "x*"), ("filter[started_at][GT]", "2024-01-01")), spec
    )
    assert opts.filters == [
        FilterOption(("name", "hostname"), "eq", ("x*",), False),
        FilterOption(("started_at",), "gt", ("2024-01-01",), False),
    ]


def test_filter_explicit_eq_operator_for_plain_field() -> None:
    opts = parse_list_options(q(("filter[status][eq]", "failed")), JOBS)
    assert opts.filters == [FilterOption(("status",), "eq", ("failed",), False)]


def test_filter_wildcard_columns_expand_to_plain_fields() -> None:
    opts = parse_list_options(q(("filter[*]", "abc")), JOBS)
    assert opts.filters == [FilterOption(("client_id", "jid", "status"), "eq", ("abc",), False)]
    opts = parse_list_options(q(("filter[*][until]", "2024-01-01")), JOBS)
    assert opts.filters[0].fields == ("finished_at", "started_at")


def test_filter_empty_value_kept() -> None:
    opts = parse_list_options(q(("filter[status]", "")), JOBS)
    assert opts.filters == [FilterOption(("status",), "eq", ("",), False)]


@pytest.mark.parametrize(
    "key",
    [
        "filter[foo]",
        "filter[status][gt]",  # operator not listed
        "filter[started_at]",  # operator field without operator
        "filter[started_at][eq]",
        "filter[started_at][bogus]",
        "filter[jid|foo]",
        "filter[jid|]",
        "filter[*][bogus]",
        "filter[jid",
        "filter",
        "filterjid",
        "filter[jid][gt][lt]",
        "filter[]",
    ],
)
def test_unsupported_filter_fields(key: str) -> None:
    assert parse_err(JOBS, (key, "x")) == [f"unsupported filter field '{key}'"]


def test_filter_with_wildcard_columns_and_no_fields() -> None:
    assert parse_err(NO_PAGE, ("filter[*][gt]", "1")) == [
        "unsupported filter field 'filter[*][gt]'"
    ]


# --------------------------------------------------------------------------- filter matching

HOSTS: list[dict[str, Any]] = [
    {
        "id": "c1",
        "name": "Web-01",
        "os": "Linux",
        "hostname": "web01.example.com",
        "tags": ["prod", "web"],
        "labels": {"city": "Berlin", "team": "ops"},
        "num_cpus": 4,
        "connected": True,
    },
    {
        "id": "c2",
        "name": "db-01",
        "os": "linux",
        "hostname": "db01.example.org",
        "tags": ["prod", "db"],
        "labels": {"city": "Paris"},
        "num_cpus": 16,
        "connected": False,
    },
    {
        "id": "c3",
        "name": "win",
        "os": "Windows",
        "hostname": "",
        "tags": None,
        "labels": None,
        "num_cpus": 2.0,
        "connected": True,
    },
    {
        "id": "c4",
        "name": "a.b(c)",
        "os": None,
        "hostname": None,
        "tags": [],
        "labels": {},
        "num_cpus": None,
        "connected": None,
    },
]

HOST_SPEC = ListSpec(
    filter_fields=frozenset(
        {"id", "name", "os", "hostname", "tags", "labels", "num_cpus", "connected"}
        | {"num_cpus[gt]", "num_cpus[lt]", "num_cpus[since]", "num_cpus[until]", "name[gt]"}
    )
)


def hosts(*pairs: tuple[str, str]) -> list[str]:
    return run_filter(HOSTS, HOST_SPEC, *pairs)


def test_match_case_insensitive_equality() -> None:
    assert hosts(("filter[os]", "LINUX")) == ["c1", "c2"]
    assert hosts(("filter[name]", "web")) == []


def test_match_or_values() -> None:
    assert hosts(("filter[os]", "linux,windows")) == ["c1", "c2", "c3"]
    assert hosts(("filter[os]", "or(windows, nope)")) == ["c3"]


def test_match_wildcards() -> None:
    assert hosts(("filter[hostname]", "*.example.*")) == ["c1", "c2"]
    assert hosts(("filter[hostname]", "*.COM")) == ["c1"]
    assert hosts(("filter[name]", "*-0*")) == ["c1", "c2"]
    assert hosts(("filter[name]", "W*")) == ["c1", "c3"]
    # regex metacharacters are literal
    assert hosts(("filter[name]", "a.b(*")) == ["c4"]
    assert hosts(("filter[name]", "a?b*")) == []
    # anchored: must match the whole value
    assert hosts(("filter[name]", "eb*")) == []


def test_match_list_fields_any_element() -> None:
    assert hosts(("filter[tags]", "web")) == ["c1"]
    assert hosts(("filter[tags]", "prod")) == ["c1", "c2"]
    assert hosts(("filter[tags]", "web,db")) == ["c1", "c2"]
    assert hosts(("filter[tags]", "D*")) == ["c2"]


def test_match_and_requires_every_value() -> None:
    assert hosts(("filter[tags]", "and(prod,web)")) == ["c1"]
    assert hosts(("filter[tags]", "and(prod,p*)")) == ["c1", "c2"]
    assert hosts(("filter[tags]", "and(web,db)")) == []


def test_match_labels_as_key_value_strings() -> None:
    assert hosts(("filter[labels]", "city: berlin")) == ["c1"]
    assert hosts(("filter[labels]", "city: *")) == ["c1", "c2"]
    assert hosts(("filter[labels]", "*: ops")) == ["c1"]
    assert hosts(("filter[labels]", "and(city: Berlin, team: ops)")) == ["c1"]
    assert hosts(("filter[labels]", "berlin")) == []


def test_match_empty_value_matches_empty_and_none() -> None:
    assert hosts(("filter[hostname]", "")) == ["c3", "c4"]
    assert hosts(("filter[tags]", "")) == ["c3", "c4"]
    assert hosts(("filter[labels]", "")) == ["c3", "c4"]


def test_match_none_never_matches_non_empty() -> None:
    assert hosts(("filter[os]", "*")) == ["c1", "c2", "c3"]
    assert hosts(("filter[hostname]", "*")) == ["c1", "c2", "c3"]  # "" matches *


def test_match_numbers_and_bools() -> None:
    assert hosts(("filter[num_cpus]", "4")) == ["c1"]
    assert hosts(("filter[num_cpus]", "2")) == ["c3"]  # 2.0 renders as "2"
    assert hosts(("filter[num_cpus]", "1*")) == ["c2"]
    assert hosts(("filter[connected]", "TRUE")) == ["c1", "c3"]
    assert hosts(("filter[connected]", "false")) == ["c2"]


def test_match_numeric_operators() -> None:
    assert hosts(("filter[num_cpus][gt]", "4")) == ["c2"]
    assert hosts(("filter[num_cpus][since]", "4")) == ["c1", "c2"]
    assert hosts(("filter[num_cpus][lt]", "10")) == ["c1", "c3"]  # numeric, not "16" < "10"
    assert hosts(("filter[num_cpus][until]", "2")) == ["c3"]


def test_match_string_operator_fallback() -> None:
    assert hosts(("filter[name][gt]", "V")) == ["c1", "c3"]


def test_match_or_across_fields_and_and_across_params() -> None:
    assert hosts(("filter[name|hostname]", "db*")) == ["c2"]
    assert hosts(("filter[os|name]", "win*")) == ["c3"]
    assert hosts(("filter[os]", "linux"), ("filter[tags]", "db")) == ["c2"]
    assert hosts(("filter[os]", "linux"), ("filter[tags]", "nope")) == []


def test_match_all_fields_wildcard() -> None:
    assert hosts(("filter[*]", "db*")) == ["c2"]
    assert hosts(("filter[*]", "berlin")) == []
    assert hosts(("filter[*]", "city: paris")) == ["c2"]


def test_match_and_across_or_fields() -> None:
    # each value must match in at least one of the fields
    assert hosts(("filter[tags|os]", "and(web,linux)")) == ["c1"]
    assert hosts(("filter[tags|os]", "and(db,windows)")) == []


def test_filter_items_accepts_iterables_and_no_filters() -> None:
    assert ids(filter_items(iter(HOSTS), [], getter)) == ["c1", "c2", "c3", "c4"]


# --------------------------------------------------------------------------- date matching

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
EVENTS: list[dict[str, Any]] = [
    {"id": "e1", "at": T0 - timedelta(days=1)},  # 2024-04-30 10:00Z
    {"id": "e2", "at": T0},  # 2024-05-01 10:00Z
    {"id": "e3", "at": "2024-05-01T23:30:00+00:00"},  # parsable string
    {"id": "e4", "at": datetime(2024, 5, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))},
    {"id": "e5", "at": None},
    {"id": "e6", "at": datetime(2024, 5, 3, 8, 0)},  # naive = UTC
]
EVENT_SPEC = ListSpec(
    filter_fields=frozenset({"at"} | {f"at[{op}]" for op in ("gt", "lt", "since", "until")})
)


def events(*pairs: tuple[str, str]) -> list[str]:
    return run_filter(EVENTS, EVENT_SPEC, *pairs)


def test_date_eq_is_same_day_window() -> None:
    # e4 is 2024-05-01 22:30Z
    assert events(("filter[at]", "2024-05-01")) == ["e2", "e3", "e4"]
    assert events(("filter[at]", "2024-05-03")) == ["e6"]


def test_date_eq_full_timestamp_is_exact() -> None:
    assert events(("filter[at]", "2024-05-01T12:00:00+02:00")) == ["e2"]


def test_date_operators() -> None:
    assert events(("filter[at][gt]", "2024-05-01T10:00:00Z")) == ["e3", "e4", "e6"]
    assert events(("filter[at][since]", "2024-05-01T10:00:00Z")) == ["e2", "e3", "e4", "e6"]
    assert events(("filter[at][lt]", "2024-05-01T10:00:00Z")) == ["e1"]
    assert events(("filter[at][until]", "2024-05-01T10:00:00.000000001Z")) == ["e1", "e2"]
    assert events(("filter[at][gt]", "2024-05-02")) == ["e6"]
    assert events(("filter[at][lt]", "2024-05-01")) == ["e1"]
    # a time range as two ANDed params
    assert events(("filter[at][since]", "2024-05-01"), ("filter[at][until]", "2024-05-02")) == [
        "e2",
        "e3",
        "e4",
    ]


def test_parse_datetime() -> None:
    assert parse_datetime("2024-05-01") == (datetime(2024, 5, 1, tzinfo=UTC), True)
    assert parse_datetime("2024-05-01T12:00:00.123456789+02:00") == (
        datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC),
        False,
    )
    assert parse_datetime("2024-05-01 12:00:00") == (datetime(2024, 5, 1, 12, tzinfo=UTC), False)
    assert parse_datetime("2024-13-01") is None
    assert parse_datetime("20240501") is None
    assert parse_datetime("yesterday") is None


# --------------------------------------------------------------------------- pagination


def test_pagination_defaults() -> None:
    assert parse_list_options(q(), CLIENTS).pagination == Pagination(50, 0)
    assert parse_list_options(q(("page[limit]", "")), CLIENTS).pagination == Pagination(50, 0)
    opts = parse_list_options(q(("page[limit]", "500"), ("page[offset]", "7")), CLIENTS)
    assert opts.pagination == Pagination(500, 7)


def test_pagination_ignored_when_unsupported() -> None:
    opts = parse_list_options(q(("page[limit]", "abc"), ("page[offset]", "-1")), NO_PAGE)
    assert opts.pagination is None


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("page[limit]", "abc")], ["pagination limit must be a number"]),
        ([("page[limit]", "1.5")], ["pagination limit must be a number"]),
        ([("page[limit]", "501")], ["pagination limit too big (501) maximum is 500"]),
        ([("page[limit]", "0")], ["pagination limit must be positive"]),
        ([("page[limit]", "-3")], ["pagination limit must be positive"]),
        ([("page[offset]", "x")], ["pagination offset must be a number"]),
        ([("page[offset]", "-1")], ["pagination offset must not be negative"]),
        (
            [("page[limit]", "x"), ("page[offset]", "-2")],
            ["pagination limit must be a number", "pagination offset must not be negative"],
        ),
    ],
)
def test_pagination_errors(pairs: list[tuple[str, str]], expected: list[str]) -> None:
    assert parse_err(CLIENTS, *pairs) == expected


def test_paginate() -> None:
    items = list(range(10))
    assert paginate(items, Pagination(3, 0)) == [0, 1, 2]
    assert paginate(items, Pagination(3, 8)) == [8, 9]
    assert paginate(items, Pagination(3, 20)) == []
    assert paginate(items, None) == items


# --------------------------------------------------------------------------- fields


def test_fields_defaults_applied_without_fields_params() -> None:
    opts = parse_list_options(q(), JOBS)
    assert not opts.explicit_fields
    assert opts.fields_for("jobs") == ["jid", "status", "finished_at"]
    assert opts.fields_for("result") == ["summary"]


def test_fields_explicit_drops_all_defaults() -> None:
    opts = parse_list_options(q(("fields[jobs]", "jid,client_id")), JOBS)
    assert opts.explicit_fields
    assert opts.fields_for("jobs") == ["jid", "client_id"]
    assert opts.fields_for("result") == []


def test_fields_alias_repeat_dedupe_and_trim() -> None:
    opts = parse_list_options(
        q(
            ("fields[commands]", "jid, status"),
            ("fields[jobs]", "status,started_at,"),
            ("fields[result]", "stdout"),
        ),
        JOBS,
    )
    assert opts.fields == {"jobs": ["jid", "status", "started_at"], "result": ["stdout"]}


def test_fields_for_without_defaults_means_all() -> None:
    spec = ListSpec(fields={"commands": frozenset({"id", "name"})})
    assert parse_list_options(q(), spec).fields_for("commands") is None
    opts = parse_list_options(q(("fields[commands]", "name")), spec)
    assert opts.fields_for("commands") == ["name"]
    assert ListOptions().fields_for("anything") is None


def test_fields_ignored_when_endpoint_has_none() -> None:
    opts = parse_list_options(q(("fields[zzz]", "a")), NO_PAGE)
    assert opts.fields == {} and not opts.explicit_fields


def test_fields_errors() -> None:
    assert parse_err(JOBS, ("fields[foo]", "a"), ("fields[scripts]", "jid,nope,result")) == [
        'unsupported resource in fields: "foo"',
        'unsupported field "nope" for resource "scripts"',
        'unsupported field "result" for resource "scripts"',
    ]


def test_select_fields() -> None:
    obj = {"id": "1", "name": "n", "hostname": "h", "os": None}
    assert select_fields(obj, None) == obj
    assert select_fields(obj, ["os", "id", "missing"]) == {"id": "1", "os": None}
    assert list(select_fields(obj, ["os", "id"])) == ["id", "os"]
    assert select_fields(obj, []) == {}


# --------------------------------------------------------------------------- combined errors


def test_several_errors_in_one_api_error() -> None:
    with pytest.raises(ApiError) as exc:
        parse_list_options(
            q(
                ("sort", "bad"),
                ("filter[nope]", "1"),
                ("fields[clients]", "secret"),
                ("page[limit]", "9999"),
            ),
            CLIENTS,
        )
    assert exc.value.status == 400
    assert exc.value.to_json() == {
        "errors": [
            {"code": "", "title": "unsupported sort field 'bad'", "detail": ""},
            {"code": "", "title": "unsupported filter field 'filter[nope]'", "detail": ""},
            {
                "code": "",
                "title": 'unsupported field "secret" for resource "clients"',
                "detail": "",
            },
            {"code": "", "title": "pagination limit too big (9999) maximum is 500", "detail": ""},
        ]
    }


def test_unrelated_params_ignored() -> None:
    opts = parse_list_options(q(("access_token", "x"), ("foo", "bar")), CLIENTS)
    assert opts.filters == [] and opts.sorts == [SortOption("id", False)]


# --------------------------------------------------------------------------- SQL

JOB_ROWS: list[tuple[str, str, str | None, str | None, str]] = [
    # jid, status, finished_at, client_name, details
    ("j1", "successful", "2024-05-01T10:00:00Z", "Web_01", '{"client_name": "Web_01"}'),
    ("j2", "failed", "2024-05-01T23:30:00.5+00:00", "web-02", '{"client_name": "web-02"}'),
    ("j3", "running", None, "100%", '{"client_name": "100%"}'),
    ("j4", "successful", "2024-05-02T01:00:00+02:00", "webX01", '{"client_name": "webX01"}'),
    ("j5", "", "2024-04-30T12:00:00Z", None, "{}"),
    ("j6", "failed", "2024-05-03T00:00:00Z", "back\\slash", '{"client_name": "back\\\\slash"}'),
]
COLUMNS = {
    "jid": "jid",
    "status": "status",
    "finished_at": "finished_at",
    "client_name": "client_name",
    "detail_name": "json_extract(details,'$.client_name')",
}


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE jobs (jid TEXT, status TEXT, finished_at TEXT, client_name TEXT,"
        " details TEXT)"
    )
    conn.executemany("INSERT INTO jobs VALUES (?,?,?,?,?)", JOB_ROWS)
    yield conn
    conn.close()


def select(
    conn: sqlite3.Connection,
    filters: list[FilterOption],
    sorts: list[SortOption] | None = None,
    pagination: Pagination | None = None,
) -> list[str]:
    where, params = sql_where(filters, COLUMNS, frozenset({"finished_at"}))
    order = sql_order(sorts or [SortOption("jid", False)], COLUMNS)
    limit, limit_params = sql_limit(pagination)
    sql = f"SELECT jid FROM jobs {where} {order} {limit}"
    return [row[0] for row in conn.execute(sql, {**params, **limit_params})]


def sel(conn: sqlite3.Connection, *pairs: tuple[str, str]) -> list[str]:
    spec = ListSpec(
        filter_fields=frozenset(
            {"jid", "status", "client_name", "detail_name", "finished_at"}
            | {f"finished_at[{op}]" for op in ("gt", "lt", "since", "until")}
        )
    )
    return select(conn, parse_list_options(q(*pairs), spec).filters)


def test_sql_where_empty() -> None:
    assert sql_where([], COLUMNS) == ("", {})


def test_sql_where_shape() -> None:
    where, params = sql_where(
        [
            FilterOption(("status",), "eq", ("failed", "running"), False),
            FilterOption(("client_name",), "eq", ("web*",), False),
        ],
        COLUMNS,
    )
    assert where == (
        "WHERE (status = :p0 OR status = :p1) AND LOWER(client_name) LIKE :p2 ESCAPE '\\'"
    )
    assert params == {"p0": "failed", "p1": "running", "p2": "web%"}


def test_sql_where_param_prefix() -> None:
    where, params = sql_where(
        [FilterOption(("jid",), "eq", ("a",), False)], COLUMNS, param_prefix="f"
    )
    assert where == "WHERE jid = :f0" and params == {"f0": "a"}


def test_sql_equality_or_and(db: sqlite3.Connection) -> None:
    assert sel(db, ("filter[status]", "failed")) == ["j2", "j6"]
    assert sel(db, ("filter[status]", "failed,running")) == ["j2", "j3", "j6"]
    assert sel(db, ("filter[status]", "failed"), ("filter[jid]", "j6")) == ["j6"]
    assert sel(db, ("filter[status|jid]", "running,j1")) == ["j1", "j3"]
    assert sel(db, ("filter[status|jid]", "and(failed,j2)")) == ["j2"]
    assert sel(db, ("filter[status]", "and(failed,running)")) == []


def test_sql_empty_value_matches_empty_and_null(db: sqlite3.Connection) -> None:
    assert sel(db, ("filter[status]", "")) == ["j5"]
    assert sel(db, ("filter[client_name]", "")) == ["j5"]
    assert sel(db, ("filter[finished_at]", "")) == ["j3"]


def test_sql_wildcards_case_insensitive(db: sqlite3.Connection) -> None:
    assert sel(db, ("filter[client_name]", "WEB*")) == ["j1", "j2", "j4"]
    assert sel(db, ("filter[detail_name]", "*-02")) == ["j2"]
    assert sel(db, ("filter[client_name]", "*")) == ["j1", "j2", "j3", "j4", "j6"]


def test_sql_like_escaping(db: sqlite3.Connection) -> None:
    # "_" must not act as a single-character wildcard: webX01 must not match web_01*
    assert sel(db, ("filter[client_name]", "web_01*")) == ["j1"]
    # "%" must be literal
    assert sel(db, ("filter[client_name]", "*%")) == ["j3"]
    assert sel(db, ("filter[client_name]", "1%*")) == []
    # backslash is literal too
    assert sel(db, ("filter[client_name]", "back\\*")) == ["j6"]


def test_sql_date_comparisons(db: sqlite3.Connection) -> None:
    # finished_at in UTC: j1 05-01 10:00, j2 05-01 23:30, j4 05-01 23:00, j5 04-30, j6 05-03
    assert sel(db, ("filter[finished_at][gt]", "2024-05-01T10:00:00Z")) == ["j2", "j4", "j6"]
    assert sel(db, ("filter[finished_at][since]", "2024-05-01T12:00:00+02:00")) == [
        "j1",
        "j2",
        "j4",
        "j6",
    ]
    assert sel(db, ("filter[finished_at][lt]", "2024-05-01")) == ["j5"]
    assert sel(db, ("filter[finished_at][until]", "2024-05-03")) == ["j1", "j2", "j4", "j5", "j6"]
    assert sel(db, ("filter[finished_at]", "2024-05-01")) == ["j1", "j2", "j4"]
    assert sel(
        db,
        ("filter[finished_at][since]", "2024-05-01"),
        ("filter[finished_at][until]", "2024-05-01T23:00:00Z"),
    ) == ["j1", "j4"]


def test_sql_date_value_normalised() -> None:
    where, params = sql_where(
        [FilterOption(("finished_at",), "gt", ("2024-05-01T12:00:00.5+02:00",), False)],
        COLUMNS,
        frozenset({"finished_at"}),
    )
    assert where == "WHERE DATETIME(finished_at) > DATETIME(:p0)"
    assert params == {"p0": "2024-05-01 10:00:00"}


def test_sql_operators_without_dates(db: sqlite3.Connection) -> None:
    filters = [FilterOption(("jid",), "gt", ("j4",), False)]
    assert select(db, filters) == ["j5", "j6"]
    filters = [FilterOption(("jid",), "until", ("j2",), False)]
    assert select(db, filters) == ["j1", "j2"]
    # a "*" with a non-eq operator is a plain comparison
    where, _ = sql_where([FilterOption(("jid",), "lt", ("j*",), False)], COLUMNS)
    assert where == "WHERE jid < :p0"


def test_sql_unknown_column_raises() -> None:
    with pytest.raises(ValueError):
        sql_where([FilterOption(("nope",), "eq", ("x",), False)], COLUMNS)
    with pytest.raises(ValueError):
        sql_order([SortOption("nope", False)], COLUMNS)


def test_sql_order_and_limit(db: sqlite3.Connection) -> None:
    assert sql_order([], COLUMNS) == ""
    assert sql_order([SortOption("status", False), SortOption("jid", True)], COLUMNS) == (
        "ORDER BY status ASC, jid DESC"
    )
    assert sql_limit(None) == ("", {})
    assert sql_limit(Pagination(5, 10)) == (
        "LIMIT :page_limit OFFSET :page_offset",
        {"page_limit": 5, "page_offset": 10},
    )
    sorts = [SortOption("status", True), SortOption("jid", False)]
    assert select(db, [], sorts) == ["j1", "j4", "j3", "j2", "j6", "j5"]
    assert select(db, [], sorts, Pagination(2, 1)) == ["j4", "j3"]
    assert select(db, [], sorts, Pagination(2, 10)) == []
