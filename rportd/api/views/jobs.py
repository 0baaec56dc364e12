"""Commands, scripts and their jobs over REST (api.md §4.5, §5.6)."""

from __future__ import annotations

from aiohttp import web

from rportd.api.audit import audit_note
from rportd.api.context import identity_of, server_of
from rportd.api.errors import ApiError, forbidden, not_found
from rportd.api.guards import require_permission
from rportd.api.query import (
    FilterOption,
    ListSpec,
    parse_list_options,
)
from rportd.api.responses import envelope, read_json
from rportd.api.views.clients import access_denied, accessible_client
from rportd.clients.model import Client
from rportd.jobs.model import JOB_FIELDS, RESULT_FIELDS
from rportd.jobs.requests import (
    ExecuteInput,
    JobRequestError,
    MultiJobRequest,
    check_command,
    check_interpreter,
    decode_script,
)
from rportd.jobs.service import JobSpec, RunFailed
from rportd.jobs.targeting import resolve_targets

_DATE_OPERATORS = ("gt", "lt", "since", "until")

JOB_LIST_SPEC = ListSpec(
    sort_fields=frozenset(
        {"jid", "started_at", "finished_at", "status", "multi_job_id", "schedule_id", "created_by"}
    ),
    filter_fields=frozenset(
        {"jid", "status", "created_by", "multi_job_id", "schedule_id", "client_id"}
        | {
            f"{d}[{op}]"
            for d in ("started_at", "finished_at")
            for op in ("gt", "lt", "since", "until")
        }
    ),
    fields={"jobs": JOB_FIELDS, "result": RESULT_FIELDS},
    default_fields={"jobs": ("jid", "status", "finished_at"), "result": ("summary",)},
    resource_aliases={"commands": "jobs", "scripts": "jobs"},
    page_default=100,
    page_max=1000,
)

MULTI_JOB_LIST_SPEC = ListSpec(
    sort_fields=frozenset({"jid", "started_at", "created_by", "schedule_id"}),
    filter_fields=frozenset(
        {"jid", "created_by", "schedule_id"} | {f"started_at[{op}]" for op in _DATE_OPERATORS}
    ),
    page_default=100,
    page_max=1000,
)


def api_error(exc: JobRequestError) -> ApiError:
    return ApiError(exc.status, exc.title, exc.detail)


def check_access(request: web.Request, clients: list[Client]) -> None:
    """403 naming every target the caller may not act on."""
    server = server_of(request)
    identity = identity_of(request)
    denied = [c.id for c in clients if not server.client_access.can_access(identity, c)]
    if denied:
        raise access_denied(*denied)


# --- one client ------------------------------------------------------------------------


async def _run_on_client(
    request: web.Request, client: Client, command: str, body: ExecuteInput, *, is_script: bool
) -> web.Response:
    server = server_of(request)
    try:
        check_command(command)
        check_interpreter(body.interpreter, is_script)
    except JobRequestError as exc:
        raise api_error(exc) from None
    active = server.clients.registry.get_connected(client.id)
    inactive = not_found(f'Active client with id="{client.id}" not found.')
    if active is None:
        raise inactive
    spec = JobSpec(
        command=command,
        interpreter=body.interpreter,
        cwd=body.cwd,
        is_sudo=body.is_sudo,
        is_script=is_script,
        timeout_sec=body.timeout_sec,
    )
    try:
        job = await server.jobs.run(active, spec, identity_of(request).username)
    except RunFailed as exc:
        if exc.not_connected:
            raise inactive from None
        if exc.client_error:
            raise ApiError(409, exc.text) from None
        raise ApiError(500, "Failed to execute remote command.", exc.text) from None
    return envelope({"jid": job.jid})


async def post_client_command(request: web.Request) -> web.Response:
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "commands")
    try:
        body = ExecuteInput.parse(await read_json(request))
    except JobRequestError as exc:
        raise api_error(exc) from None
    return await _run_on_client(request, client, body.command, body, is_script=False)


async def post_client_script(request: web.Request) -> web.Response:
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "scripts")
    try:
        body = ExecuteInput.parse(await read_json(request))
        command = decode_script(body.script)
    except JobRequestError as exc:
        raise api_error(exc) from None
    return await _run_on_client(request, client, command, body, is_script=True)


async def _list_jobs(request: web.Request, scope: FilterOption) -> web.Response:
    options = parse_list_options(request.query, JOB_LIST_SPEC)
    fields = options.fields_for("jobs")
    result_fields = options.fields_for("result")
    jobs, count = await server_of(request).jobs.list_jobs(options, scope, fields, result_fields)
    return envelope([j.to_partial_json(fields, result_fields) for j in jobs], count=count)


async def list_client_jobs(request: web.Request) -> web.Response:
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "commands")
    return await _list_jobs(request, FilterOption(("client_id",), "eq", (client.id,)))


async def get_client_job(request: web.Request) -> web.Response:
    client = accessible_client(request, request.match_info["client_id"])
    require_permission(request, "commands")
    jid = request.match_info["job_id"]
    job = await server_of(request).jobs.job(jid)
    if job is None or job.client_id != client.id:
        raise not_found(f'Job[id="{jid}"] not found.')
    return envelope(job.to_json())


# --- many clients ----------------------------------------------------------------------


async def _start_multi(
    request: web.Request,
    req: MultiJobRequest,
    targets: list[Client],
    command: str,
    *,
    is_script: bool,
) -> web.Response:
    server = server_of(request)
    spec = JobSpec.of(req, command, is_script=is_script)
    check_access(request, targets)
    multi = await server.jobs.start_multi(req, spec, targets, identity_of(request).username)
    audit_note(request).clients = [(c.id, c.hostname) for c in targets]
    return envelope({"jid": multi.jid})


async def post_multi_command(request: web.Request) -> web.Response:
    require_permission(request, "commands")
    server = server_of(request)
    try:
        req = MultiJobRequest.parse(await read_json(request))
        check_command(req.command)
        check_interpreter(req.interpreter, False)
        targets = resolve_targets(req, server.clients.registry, server.client_groups)
    except JobRequestError as exc:
        raise api_error(exc) from None
    return await _start_multi(request, req, targets, req.command, is_script=False)


async def post_multi_script(request: web.Request) -> web.Response:
    require_permission(request, "scripts")
    server = server_of(request)
    try:
        req = MultiJobRequest.parse(await read_json(request))
        targets = resolve_targets(req, server.clients.registry, server.client_groups)
        command = decode_script(req.script)
    except JobRequestError as exc:
        raise api_error(exc) from None
    return await _start_multi(request, req, targets, command, is_script=True)


async def list_multi_jobs(request: web.Request) -> web.Response:
    require_permission(request, "commands")
    repo = server_of(request).jobs.repo
    options = parse_list_options(request.query, MULTI_JOB_LIST_SPEC)
    items = await repo.list_multi_jobs(options)
    count = await repo.count_multi_jobs(options.filters)
    return envelope([m.summary_json() for m in items], count=count)


async def get_multi_job(request: web.Request) -> web.Response:
    require_permission(request, "commands")
    jid = request.match_info["job_id"]
    multi = await server_of(request).jobs.multi_job(jid)
    if multi is None:
        raise not_found(f'Multi-client Job[id="{jid}"] not found.')
    identity = identity_of(request)
    if not identity.is_admin and multi.created_by != identity.username:
        raise forbidden("forbidden", "you are not allowed to access items created by another user")
    return envelope(multi.to_json())


async def list_multi_job_jobs(request: web.Request) -> web.Response:
    require_permission(request, "commands")
    jid = request.match_info["job_id"]
    return await _list_jobs(request, FilterOption(("multi_job_id",), "eq", (jid,)))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/clients/{client_id}/commands", post_client_command)
    r.add_get("/api/v1/clients/{client_id}/commands", list_client_jobs)
    r.add_get("/api/v1/clients/{client_id}/commands/{job_id}", get_client_job)
    r.add_post("/api/v1/clients/{client_id}/scripts", post_client_script)
    r.add_post("/api/v1/commands", post_multi_command)
    r.add_get("/api/v1/commands", list_multi_jobs)
    r.add_get("/api/v1/commands/{job_id}", get_multi_job)
    r.add_get("/api/v1/commands/{job_id}/jobs", list_multi_job_jobs)
    r.add_post("/api/v1/scripts", post_multi_script)
