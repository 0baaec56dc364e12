"""Reading ``monitoring.db``: raw metrics, process and mount point lists, downsampled graphs.

Shapes and rules follow upstream's monitoring API: ``filter[timestamp][gt|lt]`` take Unix
seconds, ``[since|until]`` RFC 3339; graphs need exactly one lower and one upper bound
2 to 48 hours apart and group the points into buckets of ``hours * 29`` seconds
(about 124 points per graph), giving avg (rounded to 2 places), min and max per bucket.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rportd.api.errors import ApiError
from rportd.api.query import FilterOption, ListOptions, ListSpec, SortOption
from rportd.gotypes import format_time, parse_time
from rportd.store.database import Database, Row

TIME_OPERATORS = ("gt", "lt", "since", "until")
TIME_FILTERS = frozenset(f"timestamp[{op}]" for op in TIME_OPERATORS)
NEWEST_FIRST = (SortOption("timestamp", desc=True),)
MIN_GRAPH_HOURS = 2
MAX_GRAPH_HOURS = 48
BUCKET_SECONDS_PER_HOUR = 29  # upstream's choice: about 124 points whatever the span
ONE_MBIT_BYTES = 125_000.0

METRIC_FIELDS = ("timestamp", "cpu_usage_percent", "memory_usage_percent", "io_usage_percent")

METRICS_SPEC = ListSpec(
    sort_fields=frozenset({"timestamp"}),
    default_sort=NEWEST_FIRST,
    filter_fields=TIME_FILTERS,
    fields={"metrics": frozenset(METRIC_FIELDS)},
    default_fields={"metrics": METRIC_FIELDS},
    page_default=1,
    page_max=120,
)
PROCESSES_SPEC = ListSpec(
    sort_fields=frozenset({"timestamp"}),
    default_sort=NEWEST_FIRST,
    filter_fields=TIME_FILTERS,
    fields={"processes": frozenset({"timestamp", "processes"})},
    default_fields={"processes": ("timestamp", "processes")},
    page_default=1,
    page_max=10,
)
MOUNTPOINTS_SPEC = ListSpec(
    sort_fields=frozenset({"timestamp"}),
    default_sort=NEWEST_FIRST,
    filter_fields=TIME_FILTERS,
    fields={"mountpoints": frozenset({"timestamp", "mountpoints"})},
    default_fields={"mountpoints": ("timestamp", "mountpoints")},
    page_default=1,
    page_max=100,
)
GRAPH_SPEC = ListSpec(
    sort_fields=frozenset({"timestamp"}),
    default_sort=NEWEST_FIRST,
    filter_fields=TIME_FILTERS,
)


@dataclass(frozen=True)
class Graph:
    """One graph of ``/graph-metrics/{graph_name}``: its column, output key and kind."""

    column: str
    key: str
    network: bool = False
    percent: bool = False

    @property
    def card(self) -> str:
        return "lan_card" if self.key.endswith("_lan") else "wan_card"


GRAPHS: dict[str, Graph] = {
    "cpu_usage_percent": Graph("cpu_usage_percent", "cpu_usage_percent"),
    "mem_usage_percent": Graph("memory_usage_percent", "memory_usage_percent"),
    "io_usage_percent": Graph("io_usage_percent", "io_usage_percent"),
    "net_usage_percent_lan": Graph("net_lan", "net_usage_percent_lan", True, True),
    "net_usage_percent_wan": Graph("net_wan", "net_usage_percent_wan", True, True),
    "net_usage_bps_lan": Graph("net_lan", "net_usage_bps_lan", True),
    "net_usage_bps_wan": Graph("net_wan", "net_usage_bps_wan", True),
}
BASIC_GRAPHS = ("cpu_usage_percent", "mem_usage_percent", "io_usage_percent")
LAN_GRAPHS = ("net_usage_percent_lan", "net_usage_bps_lan")
WAN_GRAPHS = ("net_usage_percent_wan", "net_usage_bps_wan")

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_UNIX = re.compile(r"[+-]?\d+")


def bad(title: str) -> ApiError:
    return ApiError(400, title)


def _moment(operator: str, value: str) -> str:
    """A filter value as an SQLite-comparable UTC time (upstream's parsing and its titles)."""
    if operator in ("gt", "lt"):
        if not _UNIX.fullmatch(value):
            raise bad(f"Illegal timestamp value {value}")
        try:
            moment = datetime.fromtimestamp(int(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise bad(f"Illegal timestamp value {value}") from None
    else:
        if not _RFC3339.fullmatch(value):
            raise bad("Illegal time value")
        try:
            parsed = parse_time(value)
        except ValueError:
            raise bad("Illegal time value") from None
        assert parsed is not None
        moment = parsed.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _where(client_id: str, filters: list[FilterOption]) -> tuple[str, dict[str, Any]]:
    """``WHERE client_id = … AND julianday(timestamp) <op> julianday(…)`` (values ORed)."""
    params: dict[str, Any] = {"client_id": client_id}
    clauses = ["client_id = :client_id"]
    ops = {"gt": ">", "lt": "<", "since": ">=", "until": "<="}
    for flt in filters:
        parts = []
        for value in flt.values:
            name = f"t{len(params)}"
            params[name] = _moment(flt.operator, value)
            parts.append(f"julianday(timestamp) {ops[flt.operator]} julianday(:{name})")
        if parts:
            clauses.append(parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")")
    return "WHERE " + " AND ".join(clauses), params


def _order(sorts: list[SortOption]) -> str:
    parts = [f"timestamp {'DESC' if s.desc else 'ASC'}" for s in sorts if s.field == "timestamp"]
    return "ORDER BY " + ", ".join(parts) if parts else ""


def _number(value: Any) -> Any:
    """Go prints whole floats without a fraction (``12``, not ``12.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _time(raw: Any) -> str | None:
    try:
        return format_time(parse_time(str(raw))) if raw is not None else None
    except ValueError:
        return None


def _embedded_json(raw: Any) -> Any:
    """A stored JSON text as the JSON value itself (``null`` when absent or broken)."""
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _selected(row: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if fields is None:
        return row
    return {key: value for key, value in row.items() if key in fields}


def _go_round(value: float) -> float:
    """``math.Round``: half away from zero."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


@dataclass(frozen=True)
class GraphWindow:
    """The validated time span of a graph request and its bucket size in seconds."""

    options: ListOptions
    hours: float

    @property
    def bucket_seconds(self) -> float:
        return _go_round(self.hours * 100) / 100 * BUCKET_SECONDS_PER_HOUR


def graph_window(options: ListOptions) -> GraphWindow:
    """Exactly one lower and one upper bound, 2 to 48 hours apart (upstream's titles)."""
    filters = options.filters
    moments = [[_moment(f.operator, v) for v in f.values] for f in filters]
    if len(filters) != 2:
        raise bad("Illegal number of filter options")
    pairs = sorted(zip(filters, moments, strict=True), key=lambda pair: pair[0].operator)
    (low, low_values), (high, high_values) = pairs
    if (low.operator, high.operator) not in (("gt", "lt"), ("since", "until")):
        raise bad(
            f"Illegal filter pair filter[timestamp][{low.operator}] "
            f"filter[timestamp][{high.operator}]"
        )
    lower = datetime.strptime(low_values[0], "%Y-%m-%d %H:%M:%S.%f")
    upper = datetime.strptime(high_values[0], "%Y-%m-%d %H:%M:%S.%f")
    if upper < lower:
        raise bad("Illegal time value (upper before lower)")
    hours = (upper - lower).total_seconds() / 3600
    if not MIN_GRAPH_HOURS <= hours <= MAX_GRAPH_HOURS:
        raise bad(f"Illegal period (min,max allowed: {MIN_GRAPH_HOURS},{MAX_GRAPH_HOURS} hours)")
    return GraphWindow(replace(options, filters=[low, high]), hours)


def _min_avg_max(row: Row, prefix: str, names: tuple[str, str, str]) -> dict[str, Any]:
    """Go's ``{avg, min, max}`` with ``omitempty``: zero values are left out."""
    out: dict[str, Any] = {}
    for name, suffix in zip(names, ("avg", "min", "max"), strict=True):
        value = row.get(f"{prefix}_{suffix}")
        if value:
            out[name] = _number(float(value))
    return out


def _in_out(row: Row, scale: float | None) -> dict[str, Any]:
    """Network ``in_*``/``out_*`` values; absent (NULL) ones are left out, zeros kept."""
    out: dict[str, Any] = {}
    for direction in ("in", "out"):
        for stat in ("avg", "min", "max"):
            value = row.get(f"{direction}_{stat}")
            if value is None:
                continue
            number = float(value)
            if scale is not None:
                number = number / scale * 100
            out[f"{direction}_{stat}"] = _number(number)
    return out


def network_card_speed(config: dict[str, Any] | None, card: str) -> int | None:
    """``max_speed`` (Mbit/s) of the client's configured LAN or WAN card; None if none."""
    monitoring = (config or {}).get("monitoring")
    value = monitoring.get(card) if isinstance(monitoring, dict) else None
    if not isinstance(value, dict):
        return None
    speed = value.get("max_speed")
    return speed if isinstance(speed, int) and not isinstance(speed, bool) else 0


class MeasurementQueries:
    """Read-only queries over the ``measurements`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _page(
        self, client_id: str, options: ListOptions, columns: str
    ) -> tuple[list[Row], int]:
        where, params = _where(client_id, options.filters)
        total = await self.db.fetch_one(f"SELECT COUNT(*) AS n FROM measurements {where}", params)
        sql = f"SELECT {columns} FROM measurements {where} {_order(options.sorts)}"
        if options.pagination is not None:
            sql += " LIMIT :limit OFFSET :offset"
            params = {
                **params,
                "limit": options.pagination.limit,
                "offset": options.pagination.offset,
            }
        rows = await self.db.fetch_all(sql, params)
        return rows, int(total["n"]) if total else 0

    async def metrics(self, client_id: str, options: ListOptions) -> tuple[list[Row], int]:
        rows, total = await self._page(client_id, options, ", ".join(METRIC_FIELDS))
        fields = options.fields_for("metrics")
        items = [
            _selected(
                {
                    "timestamp": _time(row["timestamp"]),
                    "cpu_usage_percent": _number(row["cpu_usage_percent"]),
                    "memory_usage_percent": _number(row["memory_usage_percent"]),
                    "io_usage_percent": _number(row["io_usage_percent"]),
                },
                fields,
            )
            for row in rows
        ]
        return items, total

    async def snapshots(
        self, client_id: str, options: ListOptions, kind: str
    ) -> tuple[list[Row], int]:
        """``processes`` or ``mountpoints`` lists (stored JSON text, served as JSON)."""
        assert kind in ("processes", "mountpoints")
        rows, total = await self._page(client_id, options, f"timestamp, {kind}")
        fields = options.fields_for(kind)
        items = [
            _selected(
                {"timestamp": _time(row["timestamp"]), kind: _embedded_json(row[kind])}, fields
            )
            for row in rows
        ]
        return items, total

    async def _buckets(self, client_id: str, window: GraphWindow, aggregates: str) -> list[Row]:
        where, params = _where(client_id, window.options.filters)
        params["bucket"] = window.bucket_seconds
        sql = (
            f"SELECT timestamp, {aggregates} FROM measurements {where} "
            "GROUP BY round((strftime('%s', timestamp) / (:bucket)), 0) "
            f"{_order(window.options.sorts)}"
        )
        return await self.db.fetch_all(sql, params)

    async def graph_metrics(self, client_id: str, window: GraphWindow) -> list[Row]:
        """Downsampled CPU, memory and IO usage."""
        aggregates = ", ".join(
            f"round(avg({c}), 2) AS {c}_avg, min({c}) AS {c}_min, max({c}) AS {c}_max"
            for c in ("cpu_usage_percent", "memory_usage_percent", "io_usage_percent")
        )
        rows = await self._buckets(client_id, window, aggregates)
        names = ("avg", "min", "max")
        return [
            {
                "timestamp": _time(row["timestamp"]),
                "cpu_usage_percent": _min_avg_max(row, "cpu_usage_percent", names),
                "memory_usage_percent": _min_avg_max(row, "memory_usage_percent", names),
                "io_usage_percent": _min_avg_max(row, "io_usage_percent", names),
            }
            for row in rows
        ]

    async def graph(
        self, client_id: str, window: GraphWindow, graph: Graph, card_speed: int | None
    ) -> list[Row]:
        """One downsampled graph; network percentages relative to the card's speed."""
        if graph.network:
            aggregates = ", ".join(
                f"round(avg({graph.column}_{d}), 2) AS {d}_avg, min({graph.column}_{d}) AS "
                f"{d}_min, max({graph.column}_{d}) AS {d}_max"
                for d in ("in", "out")
            )
        else:
            c = graph.column
            aggregates = f"round(avg({c}), 2) AS v_avg, min({c}) AS v_min, max({c}) AS v_max"
        rows = await self._buckets(client_id, window, aggregates)
        scale = ONE_MBIT_BYTES * (card_speed or 0) if graph.percent else None
        out = []
        for row in rows:
            values: dict[str, Any]
            if scale == 0:
                values = {}  # a card without max_speed: no percentage can be given
            elif graph.network:
                values = _in_out(row, scale)
            else:
                values = _min_avg_max(row, "v", ("avg", "min", "max"))
            out.append({"timestamp": _time(row["timestamp"]), graph.key: values})
        return out
