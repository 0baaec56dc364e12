"""Schedules: the API object, the ``jobs.db`` row, request decoding and validation."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rportd.gotypes import format_db_time, format_time, go_dumps, parse_time
from rportd.jobs.model import ClientTags
from rportd.jobs.requests import (
    JobRequestError,
    MultiJobRequest,
    check_keys,
    interpreter_problem,
    invalid_json,
    json_field,
)
from rportd.schedules import cron

TYPE_COMMAND = "command"
TYPE_SCRIPT = "script"

# Keys of the API object in upstream's order; a request body may hold any of them.
KEYS = (
    "id",
    "created_at",
    "created_by",
    "name",
    "schedule",
    "type",
    "client_ids",
    "group_ids",
    "tags",
    "command",
    "script",
    "interpreter",
    "cwd",
    "is_sudo",
    "timeout_sec",
    "execute_concurrently",
    "abort_on_error",
    "overlaps",
    "last_execution",
)
ROW_KEYS = ("id", "created_at", "created_by", "name", "schedule", "type", "details")
_STRUCT = "Schedule"


@dataclass
class LastExecution:
    """The newest run of a schedule that has jobs (storage.md §2)."""

    started_at: datetime | None
    client_count: int
    success_count: int
    status: str | None = None
    summary: str | None = None

    @classmethod
    def of(
        cls,
        started_at: datetime | None,
        client_count: int,
        success_count: int,
        status: str | None,
        job_details: str | None,
    ) -> LastExecution:
        """Status and summary are only shown when the run had exactly one client."""
        if client_count != 1:
            return cls(started_at, client_count, success_count)
        summary = None
        try:
            details = json.loads(job_details) if job_details else None
        except ValueError:
            details = None
        result = details.get("result") if isinstance(details, dict) else None
        if isinstance(result, dict):
            text = result.get("summary")
            summary = text if isinstance(text, str) else ""
        return cls(started_at, client_count, success_count, status, summary)

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": format_time(self.started_at),
            "client_count": self.client_count,
            "success_count": self.success_count,
            "status": self.status,
            "summary": self.summary,
        }


@dataclass
class Schedule:
    """A command or script to run on clients at the times ``schedule`` says."""

    id: str = ""
    created_at: datetime | None = None
    created_by: str = ""
    name: str = ""
    schedule: str = ""
    type: str = ""
    job: MultiJobRequest = field(default_factory=MultiJobRequest)
    overlaps: bool = False
    last_execution: LastExecution | None = None

    @property
    def is_script(self) -> bool:
        return self.type == TYPE_SCRIPT

    # --- JSON shapes --------------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        """The ``details`` column (upstream's keys and order; empty command/script left out)."""
        job = self.job
        out: dict[str, Any] = {
            "client_ids": job.client_ids,
            "group_ids": job.group_ids,
            "tags": job.tags.to_json() if job.tags is not None else None,
        }
        if job.command:
            out["command"] = job.command
        if job.script:
            out["script"] = job.script
        out.update(
            interpreter=job.interpreter,
            cwd=job.cwd,
            is_sudo=job.is_sudo,
            timeout_sec=job.timeout_sec,
            execute_concurrently=job.execute_concurrently,
            abort_on_error=job.abort_on_error,
            overlaps=self.overlaps,
        )
        return out

    def to_json(self) -> dict[str, Any]:
        """The API object."""
        return {
            "id": self.id,
            "created_at": format_time(self.created_at) or "0001-01-01T00:00:00Z",
            "created_by": self.created_by,
            "name": self.name,
            "schedule": self.schedule,
            "type": self.type,
            **self.details(),
            "last_execution": self.last_execution.to_json() if self.last_execution else None,
        }

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": format_db_time(self.created_at),
            "created_by": self.created_by,
            "name": self.name,
            "schedule": self.schedule,
            "type": self.type,
            "details": go_dumps(self.details()),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Schedule:
        """A stored row (ours or upstream's), read leniently."""
        try:
            details = json.loads(row.get("details") or "{}")
        except ValueError:
            details = {}
        if not isinstance(details, dict):
            details = {}
        try:
            created_at = parse_time(_text(row.get("created_at")))
        except ValueError:
            created_at = None
        abort = details.get("abort_on_error")
        return cls(
            id=_text(row.get("id")),
            created_at=created_at,
            created_by=_text(row.get("created_by")),
            name=_text(row.get("name")),
            schedule=_text(row.get("schedule")),
            type=_text(row.get("type")),
            job=MultiJobRequest(
                client_ids=_str_list(details.get("client_ids")),
                group_ids=_str_list(details.get("group_ids")),
                tags=ClientTags.from_json(details.get("tags")),
                command=_text(details.get("command")),
                script=_text(details.get("script")),
                cwd=_text(details.get("cwd")),
                is_sudo=details.get("is_sudo") is True,
                interpreter=_text(details.get("interpreter")),
                timeout_sec=_int(details.get("timeout_sec")),
                execute_concurrently=details.get("execute_concurrently") is True,
                abort_on_error=abort if isinstance(abort, bool) else None,
            ),
            overlaps=details.get("overlaps") is True,
        )

    # --- requests -------------------------------------------------------------------------

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Schedule:
        """A POST/PUT body, decoded as strictly as upstream (unknown keys, wrong types)."""
        check_keys(body, KEYS)
        s = _STRUCT
        created_at = json_field(body, "created_at", str, s)
        if created_at is not None:
            try:
                parse_time(created_at)
            except ValueError:
                raise invalid_json(
                    f"parsing time {json.dumps(created_at)}: created_at must be RFC 3339"
                ) from None
        last = body.get("last_execution")
        if last is not None and not isinstance(last, dict):
            raise invalid_json(
                "json: cannot unmarshal into Go struct field Schedule.last_execution of type "
                "schedule.Execution"
            )
        for key in ("id", "created_by"):
            json_field(body, key, str, s)
        return cls(
            name=json_field(body, "name", str, s) or "",
            schedule=json_field(body, "schedule", str, s) or "",
            type=json_field(body, "type", str, s) or "",
            job=MultiJobRequest.read_fields(body, s),
            overlaps=bool(json_field(body, "overlaps", bool, s)),
        )


def validate(schedule: Schedule) -> cron.Schedule:
    """Upstream's checks, in its order; returns the parsed expression.

    May read time zone files (``TZ=`` expressions): call it off the event loop.
    """
    if schedule.type not in (TYPE_COMMAND, TYPE_SCRIPT):
        raise JobRequestError(400, "Invalid type.", "type must be 'command' or 'script'")
    try:
        parsed = cron.parse(schedule.schedule)
    except cron.CronError as exc:
        raise JobRequestError(400, "Invalid schedule.", str(exc)) from None
    problem = interpreter_problem(schedule.job.interpreter, schedule.is_script)
    if problem is not None:
        raise JobRequestError(400, "Invalid interpreter.", problem)
    if schedule.type == TYPE_COMMAND and not schedule.job.command:
        raise JobRequestError(400, "Empty command.", "command cannot be empty")
    if schedule.is_script:
        if not schedule.job.script:
            raise JobRequestError(400, "Empty script.", "script cannot be empty")
        problem = base64_problem(schedule.job.script)
        if problem is not None:
            raise JobRequestError(400, "Invalid script.", problem)
    return parsed


_B64 = re.compile(r"[A-Za-z0-9+/]")


def base64_problem(text: str) -> str | None:
    """Why ``text`` is not standard padded base64 (line breaks ignored, as Go does)."""
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        pass
    else:
        return None
    for index, ch in enumerate(text):
        if ch not in "\r\n=" and not _B64.fullmatch(ch):
            return f"illegal base64 data at input byte {index}"
    return f"illegal base64 data at input byte {len(text)}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0


def _str_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]
