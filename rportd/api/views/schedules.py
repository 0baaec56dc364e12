"""``/schedules``: scheduled commands and scripts (api.md §4.11, §6)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.audit import audit_note
from rportd.api.context import identity_of, server_of
from rportd.api.errors import not_found
from rportd.api.guards import permission, writes_replicated
from rportd.api.query import parse_list_options
from rportd.api.responses import envelope, no_content, read_json
from rportd.api.views.jobs import api_error, check_access
from rportd.jobs.requests import JobRequestError
from rportd.jobs.targeting import resolve_targets
from rportd.schedules.model import Schedule
from rportd.schedules.store import LIST_SPEC


async def _input(request: web.Request) -> Schedule:
    """The body as a schedule whose targets exist and are all accessible to the caller."""
    server = server_of(request)
    try:
        schedule = Schedule.parse(await read_json(request))
        targets = resolve_targets(schedule.job, server.clients.registry, server.client_groups)
    except JobRequestError as exc:
        raise api_error(exc) from None
    check_access(request, targets)
    audit_note(request).clients = [(c.id, c.hostname) for c in targets]
    return schedule


@permission("scheduler")
async def list_schedules(request: web.Request) -> web.Response:
    options = parse_list_options(request.query, LIST_SPEC)
    items, count = await server_of(request).schedules.page(options)
    # Upstream wraps this list in a second envelope (api.md appendix); the web UI expects it.
    return envelope({"data": [s.to_json() for s in items], "meta": {"count": count}})


@permission("scheduler")
async def get_schedule(request: web.Request) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    schedule = await server_of(request).schedules.get(schedule_id)
    if schedule is None:
        raise not_found(f"Cannot find a schedule by the provided id: {schedule_id}")
    return envelope(schedule.to_json())


@writes_replicated
@permission("scheduler")
async def create_schedule(request: web.Request) -> web.Response:
    schedule = await _input(request)
    try:
        stored = await server_of(request).schedules.create(schedule, identity_of(request).username)
    except JobRequestError as exc:
        raise api_error(exc) from None
    return envelope(stored.to_json(), status=201)


@writes_replicated
@permission("scheduler")
async def update_schedule(request: web.Request) -> web.Response:
    schedule = await _input(request)
    try:
        stored = await server_of(request).schedules.update(
            request.match_info["schedule_id"], schedule
        )
    except JobRequestError as exc:
        raise api_error(exc) from None
    return envelope(stored.to_json())


@writes_replicated
@permission("scheduler")
async def delete_schedule(request: web.Request) -> web.Response:
    try:
        await server_of(request).schedules.delete(request.match_info["schedule_id"])
    except JobRequestError as exc:
        raise api_error(exc) from None
    return no_content()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/schedules", list_schedules)
    r.add_post("/api/v1/schedules", create_schedule)
    r.add_get("/api/v1/schedules/{schedule_id}", get_schedule)
    r.add_put("/api/v1/schedules/{schedule_id}", update_schedule)
    r.add_delete("/api/v1/schedules/{schedule_id}", delete_schedule)
