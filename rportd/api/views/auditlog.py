"""``GET /auditlog``: list audit entries (api.md §6; non-admins see only their own)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError
from rportd.api.guards import permission
from rportd.api.query import (
    ListSpec,
    parse_list_options,
    sql_limit,
    sql_order,
    sql_where,
)
from rportd.api.responses import envelope

FIELDS = (
    "timestamp",
    "username",
    "remote_ip",
    "application",
    "action",
    "affected_id",
    "client_id",
    "client_hostname",
)
LIST_SPEC = ListSpec(
    sort_fields=frozenset(FIELDS),
    filter_fields=frozenset(
        {f for f in FIELDS if f != "timestamp"}
        | {f"timestamp[{op}]" for op in ("gt", "lt", "since", "until")}
    ),
    page_default=10,
    page_max=100,
)
COLUMNS = {name: name for name in FIELDS}
USERNAME_FILTER_FORBIDDEN = "only members of group Administrators can filter by usernames"


@permission("auditlog")
async def list_entries(request: web.Request) -> web.Response:
    identity = identity_of(request)
    options = parse_list_options(request.query, LIST_SPEC)
    where, params = sql_where(options.filters, COLUMNS, frozenset({"timestamp"}))
    if not identity.is_admin:
        if any("username" in f.fields for f in options.filters):
            raise ApiError(403, "filter forbidden", USERNAME_FILTER_FORBIDDEN)
        own = "username = :own_username"
        where = f"{where} AND {own}" if where else f"WHERE {own}"
        params["own_username"] = identity.username
    order = sql_order(options.sorts, COLUMNS)
    limit, limit_params = sql_limit(options.pagination)
    auditlog = server_of(request).auditlog
    assert auditlog is not None
    entries, count = await auditlog.query(where, {**params, **limit_params}, order, limit)
    return envelope([e.to_api() for e in entries], count=count)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/auditlog", list_entries)
