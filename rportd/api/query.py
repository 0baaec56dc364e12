"""List-query engine shared by every list endpoint (api.md §3).

Parses ``sort``, ``filter[...]``, ``page[...]`` and ``fields[...]`` query parameters
into :class:`ListOptions`, validated against an endpoint's :class:`ListSpec`, and applies
them either in memory (:func:`filter_items`, :func:`sort_items`, :func:`paginate`,
:func:`select_fields`) or as SQL fragments for SQLite (:func:`sql_where`,
:func:`sql_order`, :func:`sql_limit`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from multidict import MultiMapping

from rportd.api.errors import ApiError, ErrorItem

__all__ = [
    "OPERATORS",
    "SINGLE_SORT_MESSAGE",
    "FilterOption",
    "ListOptions",
    "ListSpec",
    "Pagination",
    "SortOption",
    "filter_items",
    "paginate",
    "parse_datetime",
    "parse_list_options",
    "select_fields",
    "sort_items",
    "sql_limit",
    "sql_order",
    "sql_where",
]

T = TypeVar("T")

#: Filter operators and their SQL comparison operator.
OPERATORS: Mapping[str, str] = {"eq": "=", "gt": ">", "lt": "<", "since": ">=", "until": "<="}

SINGLE_SORT_MESSAGE = "Only one sort field is supported for clients."

_FILTER_KEY = re.compile(r"filter\[([0-9A-Za-z_|*]+)\](?:\[([0-9A-Za-z_]+)\])?")
_FIELDS_KEY = re.compile(r"fields\[([0-9A-Za-z_]+)\]")
_LOGICAL_BLOCK = re.compile(r"(and|or)\((.+)\)", re.IGNORECASE | re.DOTALL)
_INT = re.compile(r"[+-]?[0-9]+")
_DATE_ONLY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?"
)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SortOption:
    """One sort key: API field name and direction."""

    field: str
    desc: bool = False


@dataclass(frozen=True)
class FilterOption:
    """One ``filter[...]`` parameter: OR across ``fields``; values ORed or (``match_all``) ANDed."""

    fields: tuple[str, ...]
    operator: str
    values: tuple[str, ...]
    match_all: bool = False


@dataclass(frozen=True)
class Pagination:
    """Validated ``page[limit]`` / ``page[offset]``."""

    limit: int
    offset: int = 0


@dataclass
class ListOptions:
    """Parsed and validated list query options.

    ``fields`` maps a canonical resource name (aliases resolved) to the selected field
    names. It holds either the request's explicit ``fields[...]`` selection
    (``explicit_fields`` is True) or the endpoint's default fieldsets.
    """

    sorts: list[SortOption] = field(default_factory=list)
    filters: list[FilterOption] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    pagination: Pagination | None = None
    explicit_fields: bool = False

    def fields_for(self, resource: str) -> list[str] | None:
        """Fields to output for ``resource``; ``None`` means all fields.

        The requested list, else the endpoint default; a resource not mentioned while the
        request has explicit ``fields[...]`` is not selected (``[]``).
        """
        if resource in self.fields:
            return self.fields[resource]
        if self.explicit_fields:
            return []
        return None


@dataclass(frozen=True)
class ListSpec:
    """What a list endpoint supports.

    ``filter_fields`` holds plain names (operator ``eq``) and ``"name[op]"`` entries for
    the other operators. ``page_default`` None disables pagination (``page[...]`` ignored);
    empty ``fields`` disables sparse fieldsets (``fields[...]`` ignored).
    """

    sort_fields: frozenset[str] = frozenset()
    default_sort: tuple[SortOption, ...] = ()
    single_sort: bool = False
    single_sort_message: str = SINGLE_SORT_MESSAGE
    filter_fields: frozenset[str] = frozenset()
    fields: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    resource_aliases: Mapping[str, str] = field(default_factory=dict)
    page_default: int | None = None
    page_max: int | None = None


# --------------------------------------------------------------------------- parsing


def _bad(title: str) -> ErrorItem:
    return ErrorItem(title)


def _go_quote(text: str) -> str:
    """Double-quoted like Go's ``%q`` (for printable text)."""
    return json.dumps(text, ensure_ascii=False)


def _query_params(query: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """Query parameters grouped by key (first-appearance order), all values kept."""
    keys = list(dict.fromkeys(query.keys()))
    if isinstance(query, MultiMapping):
        return [(key, [str(v) for v in query.getall(key)]) for key in keys]
    return [(key, [query[key]]) for key in keys]


def _parse_sorts(
    params: list[tuple[str, list[str]]], spec: ListSpec, errors: list[ErrorItem]
) -> list[SortOption]:
    sorts: list[SortOption] = []
    for key, values in params:
        if key != "sort":
            continue
        for raw in values:
            value = raw.strip()
            if not value:
                continue
            desc = value.startswith("-")
            name = value.lstrip("-")
            if name not in spec.sort_fields:
                errors.append(_bad(f"unsupported sort field '{name}'"))
            sorts.append(SortOption(name, desc))
    return sorts


def _filter_values(raw_values: list[str]) -> tuple[tuple[str, ...], bool]:
    """Split raw filter values into operands; the last ``and(...)``/``or(...)`` block wins."""
    values: list[str] = []
    match_all = False
    for raw in raw_values:
        value = raw.strip()
        block = _LOGICAL_BLOCK.fullmatch(value)
        if block:
            match_all = block.group(1).lower() == "and"
            value = block.group(2)
        values.extend(part.strip() for part in value.split(","))
    return tuple(dict.fromkeys(values)), match_all


def _supported_filter_field(name: str, operator: str, spec: ListSpec) -> bool:
    if operator == "eq" and name in spec.filter_fields:
        return True
    return f"{name}[{operator}]" in spec.filter_fields


def _wildcard_filter_fields(operator: str, spec: ListSpec) -> tuple[str, ...]:
    """All filter fields of the spec usable with ``operator`` (for ``filter[*]``)."""
    names: set[str] = set()
    for entry in spec.filter_fields:
        if "[" not in entry:
            if operator == "eq":
                names.add(entry)
        elif entry.endswith(f"[{operator}]"):
            names.add(entry[: -len(operator) - 2])
    return tuple(sorted(names))


def _parse_filters(
    params: list[tuple[str, list[str]]], spec: ListSpec, errors: list[ErrorItem]
) -> list[FilterOption]:
    filters: list[FilterOption] = []
    for key, raw_values in params:
        if not key.startswith("filter"):
            continue
        unsupported = _bad(f"unsupported filter field '{key}'")
        match = _FILTER_KEY.fullmatch(key)
        if match is None:
            errors.append(unsupported)
            continue
        operator = (match.group(2) or "eq").lower()
        columns = tuple(col.strip() for col in match.group(1).split("|"))
        if operator not in OPERATORS:
            errors.append(unsupported)
            continue
        if columns == ("*",):
            columns = _wildcard_filter_fields(operator, spec)
            if not columns:
                errors.append(unsupported)
                continue
        elif not all(col and _supported_filter_field(col, operator, spec) for col in columns):
            errors.append(unsupported)
            continue
        values, match_all = _filter_values(raw_values)
        filters.append(FilterOption(columns, operator, values, match_all))
    return filters


def _parse_fields(
    params: list[tuple[str, list[str]]], spec: ListSpec, errors: list[ErrorItem]
) -> tuple[dict[str, list[str]], bool]:
    if not spec.fields:
        return {}, False
    selected: dict[str, list[str]] = {}
    explicit = False
    for key, raw_values in params:
        match = _FIELDS_KEY.fullmatch(key)
        if match is None:
            continue
        names = [part.strip() for raw in raw_values for part in raw.split(",")]
        names = [name for name in names if name]
        if not names:
            continue
        explicit = True
        resource = match.group(1)
        canonical = spec.resource_aliases.get(resource, resource)
        allowed = spec.fields.get(canonical)
        if allowed is None:
            errors.append(_bad(f"unsupported resource in fields: {_go_quote(resource)}"))
            continue
        for name in names:
            if name not in allowed:
                errors.append(
                    _bad(f"unsupported field {_go_quote(name)} for resource {_go_quote(resource)}")
                )
        current = selected.setdefault(canonical, [])
        current.extend(name for name in names if name in allowed and name not in current)
    if explicit:
        return selected, True
    return {res: list(names) for res, names in spec.default_fields.items()}, False


def _first(params: list[tuple[str, list[str]]], key: str) -> str:
    for name, values in params:
        if name == key and values:
            return values[0]
    return ""


def _parse_pagination(
    params: list[tuple[str, list[str]]], spec: ListSpec, errors: list[ErrorItem]
) -> Pagination | None:
    if spec.page_default is None:
        return None
    raw_limit = _first(params, "page[limit]")
    raw_offset = _first(params, "page[offset]")
    limit = spec.page_default
    offset = 0
    if raw_limit != "":
        if not _INT.fullmatch(raw_limit):
            errors.append(_bad("pagination limit must be a number"))
        else:
            limit = int(raw_limit)
            if spec.page_max is not None and limit > spec.page_max:
                errors.append(
                    _bad(f"pagination limit too big ({raw_limit}) maximum is {spec.page_max}")
                )
            if limit <= 0:
                errors.append(_bad("pagination limit must be positive"))
    if raw_offset != "":
        if not _INT.fullmatch(raw_offset):
            errors.append(_bad("pagination offset must be a number"))
        else:
            offset = int(raw_offset)
            if offset < 0:
                errors.append(_bad("pagination offset must not be negative"))
    return Pagination(limit, offset)


def parse_list_options(query: Mapping[str, str], spec: ListSpec) -> ListOptions:
    """Parse and validate list query parameters (``request.query``) for an endpoint.

    Raises ``ApiError(400)`` with one error item per bad parameter.
    """
    params = _query_params(query)
    errors: list[ErrorItem] = []
    sorts = _parse_sorts(params, spec, errors)
    filters = _parse_filters(params, spec, errors)
    fields, explicit = _parse_fields(params, spec, errors)
    pagination = _parse_pagination(params, spec, errors)
    if not errors and spec.single_sort and len(sorts) > 1:
        errors.append(_bad(spec.single_sort_message))
    if errors:
        raise ApiError(400, errors[0].title, items=errors)
    return ListOptions(
        sorts=sorts or list(spec.default_sort),
        filters=filters,
        fields=fields,
        pagination=pagination,
        explicit_fields=explicit,
    )


# --------------------------------------------------------------------------- values


def parse_datetime(text: str) -> tuple[datetime, bool] | None:
    """Parse RFC 3339 (zone optional = UTC, ``T`` or space) or ``YYYY-MM-DD``.

    Returns the aware UTC datetime and whether the text was date-only, or None.
    """
    text = text.strip()
    try:
        m = _DATE_ONLY.fullmatch(text)
        if m:
            day = date(int(m[1]), int(m[2]), int(m[3]))
            return datetime(day.year, day.month, day.day, tzinfo=UTC), True
        m = _DATETIME.fullmatch(text)
        if m is None:
            return None
        micro = int((m[7] or "0")[:6].ljust(6, "0"))
        zone = m[8] or "Z"
        iso = f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}.{micro:06d}"
        iso += "+00:00" if zone in ("Z", "z") else zone
        return datetime.fromisoformat(iso).astimezone(UTC), False
    except ValueError:
        return None


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _item_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        parsed = parse_datetime(value)
        return parsed[0] if parsed else None
    return None


def _to_text(value: object) -> str:
    """String form used for matching (Go/JSON-like)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _to_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _candidates(value: object) -> list[object]:
    """Scalars to match: list elements, ``"key: value"`` for maps, else the value."""
    if isinstance(value, Mapping):
        out: list[object] = [f"{k}: {_to_text(v)}" for k, v in value.items()]
    elif isinstance(value, list | tuple | set | frozenset):
        out = list(value)
    else:
        out = [value]
    return out or [None]


def _compare(left: Any, right: Any, operator: str) -> bool:
    if operator == "gt":
        return bool(left > right)
    if operator == "lt":
        return bool(left < right)
    if operator == "since":
        return bool(left >= right)
    if operator == "until":
        return bool(left <= right)
    return bool(left == right)


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    body = ".*?".join(re.escape(part) for part in pattern.split("*"))
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def _match_value(item: object, wanted: str, operator: str) -> bool:
    """Whether one scalar item value matches one filter value (§3.2, in memory)."""
    if wanted == "":
        return (
            item is None
            or _to_text(item) == ""
            or (operator != "eq" and _compare(_to_text(item).lower(), "", operator))
        )
    if item is None:
        return False
    wanted_date = parse_datetime(wanted)
    if wanted_date is not None:
        item_date = _item_datetime(item)
        if item_date is not None:
            moment, date_only = wanted_date
            if operator == "eq" and date_only:
                return moment <= item_date < moment + timedelta(days=1)
            return _compare(item_date, moment, operator)
    text = _to_text(item)
    if operator == "eq":
        if "*" in wanted:
            return _wildcard_regex(wanted).fullmatch(text) is not None
        return text.casefold() == wanted.casefold()
    left, right = _to_number(text), _to_number(wanted)
    if left is not None and right is not None:
        return _compare(left, right, operator)
    return _compare(text.casefold(), wanted.casefold(), operator)


def _matches_filter(item: T, flt: FilterOption, getter: Callable[[T, str], object]) -> bool:
    candidates = [c for name in flt.fields for c in _candidates(getter(item, name))]

    def matched(wanted: str) -> bool:
        return any(_match_value(c, wanted, flt.operator) for c in candidates)

    if flt.match_all:
        return all(matched(v) for v in flt.values)
    return any(matched(v) for v in flt.values)


# --------------------------------------------------------------------------- in memory


def filter_items(
    items: Iterable[T], filters: list[FilterOption], getter: Callable[[T, str], object]
) -> list[T]:
    """Items matching every filter; ``getter(item, field)`` reads an API field."""
    return [item for item in items if all(_matches_filter(item, f, getter) for f in filters)]


def _sort_key(value: object) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, datetime):
        return (3, _as_utc(value))
    if isinstance(value, str):
        return (4, value.casefold())
    return (5, _to_text(value).casefold())


def sort_items(
    items: list[T], sorts: list[SortOption], getter: Callable[[T, str], object]
) -> list[T]:
    """Stable multi-key sort (case-insensitive strings, None first ascending)."""
    result = list(items)
    for option in reversed(sorts):
        result.sort(key=lambda item: _sort_key(getter(item, option.field)), reverse=option.desc)
    return result


def paginate(items: list[T], pagination: Pagination | None) -> list[T]:
    """The requested page (all items when pagination is None)."""
    if pagination is None:
        return list(items)
    return items[pagination.offset : pagination.offset + pagination.limit]


def select_fields(obj: Mapping[str, object], fields: list[str] | None) -> dict[str, object]:
    """Keys of ``obj`` that are in ``fields`` (object order kept); None = all keys."""
    if fields is None:
        return dict(obj)
    wanted = set(fields)
    return {key: value for key, value in obj.items() if key in wanted}


# --------------------------------------------------------------------------- SQL


def _sql_datetime(value: str) -> str:
    """RFC 3339 / ``YYYY-MM-DD`` as UTC ``YYYY-MM-DD HH:MM:SS`` (unparsable: unchanged)."""
    parsed = parse_datetime(value)
    if parsed is None:
        return value
    return parsed[0].strftime("%Y-%m-%d %H:%M:%S")


def _like_pattern(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def sql_where(
    filters: list[FilterOption],
    columns: Mapping[str, str],
    date_columns: frozenset[str] = frozenset(),
    *,
    param_prefix: str = "p",
) -> tuple[str, dict[str, object]]:
    """``WHERE ...`` clause (or ``""``) and its named bind parameters.

    ``columns`` maps API field -> SQL expression; ``date_columns`` (API field names) are
    compared with ``DATETIME()``. Extra conditions: append a FilterOption.
    """
    params: dict[str, object] = {}

    def bind(value: object) -> str:
        name = f"{param_prefix}{len(params)}"
        params[name] = value
        return f":{name}"

    def condition(name: str, value: str, operator: str) -> str:
        try:
            col = columns[name]
        except KeyError:
            raise ValueError(f"no SQL column for filter field {name!r}") from None
        sql_op = OPERATORS[operator]
        is_date = name in date_columns
        if value == "":
            lhs = f"DATETIME({col})" if is_date else col
            rhs = f"DATETIME({bind(value)})" if is_date else bind(value)
            return f"({lhs} {sql_op} {rhs} OR {col} IS NULL)"
        if "*" in value and operator == "eq":
            return f"LOWER({col}) LIKE {bind(_like_pattern(value))} ESCAPE '\\'"
        if not is_date:
            return f"{col} {sql_op} {bind(value)}"
        parsed = parse_datetime(value)
        if operator == "eq" and parsed is not None and parsed[1]:
            start = parsed[0].strftime("%Y-%m-%d %H:%M:%S")
            end = (parsed[0] + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
            return (
                f"(DATETIME({col}) >= DATETIME({bind(start)})"
                f" AND DATETIME({col}) < DATETIME({bind(end)}))"
            )
        return f"DATETIME({col}) {sql_op} DATETIME({bind(_sql_datetime(value))})"

    def group(parts: list[str], joiner: str) -> str:
        return parts[0] if len(parts) == 1 else "(" + f" {joiner} ".join(parts) + ")"

    clauses: list[str] = []
    for flt in filters:
        if not flt.values or not flt.fields:
            continue
        if flt.match_all:
            per_value = [
                group([condition(n, v, flt.operator) for n in flt.fields], "OR") for v in flt.values
            ]
            clauses.append(group(per_value, "AND"))
        else:
            parts = [condition(n, v, flt.operator) for n in flt.fields for v in flt.values]
            clauses.append(group(parts, "OR"))
    if not clauses:
        return "", {}
    return "WHERE " + " AND ".join(clauses), params


def sql_order(sorts: list[SortOption], columns: Mapping[str, str]) -> str:
    """``ORDER BY ...`` (or ``""``); ``columns`` maps API field -> SQL expression."""
    parts: list[str] = []
    for option in sorts:
        try:
            col = columns[option.field]
        except KeyError:
            raise ValueError(f"no SQL column for sort field {option.field!r}") from None
        parts.append(f"{col} {'DESC' if option.desc else 'ASC'}")
    return "ORDER BY " + ", ".join(parts) if parts else ""


def sql_limit(pagination: Pagination | None) -> tuple[str, dict[str, object]]:
    """``LIMIT :page_limit OFFSET :page_offset`` (or ``""``) and its bind parameters."""
    if pagination is None:
        return "", {}
    return "LIMIT :page_limit OFFSET :page_offset", {
        "page_limit": pagination.limit,
        "page_offset": pagination.offset,
    }
