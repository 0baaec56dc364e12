"""Jobs and multi-client jobs: the JSON shapes of the wire, the API and ``jobs.db``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rportd.gotypes import ZERO_TIME, format_db_time, format_time, go_dumps, parse_time

STATUS_RUNNING = "running"
STATUS_SUCCESSFUL = "successful"
STATUS_FAILED = "failed"
STATUS_UNKNOWN = "unknown"

# Job keys in upstream's order (``models.Job``); ``fields[jobs]`` selects among JOB_FIELDS.
JOB_KEYS = (
    "jid",
    "status",
    "finished_at",
    "client_id",
    "client_name",
    "command",
    "cwd",
    "interpreter",
    "pid",
    "started_at",
    "created_by",
    "timeout_sec",
    "multi_job_id",
    "schedule_id",
    "error",
    "result",
    "is_sudo",
    "is_script",
    "stream_result",
)
JOB_FIELDS = frozenset(JOB_KEYS) - {"result", "stream_result"}
RESULT_FIELDS = frozenset({"stdout", "stderr", "summary"})

# Keys of the ``details`` column of ``jobs`` (upstream's order).
DETAIL_KEYS = (
    "command",
    "cwd",
    "is_sudo",
    "is_script",
    "interpreter",
    "pid",
    "timeout_sec",
    "error",
    "result",
    "client_name",
)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_time(value)
    except ValueError:
        return None
    if parsed is not None and parsed.year <= 1:
        return None
    return parsed


def _details(row: dict[str, Any]) -> dict[str, Any]:
    """The ``details`` JSON of a row as a dict (empty when missing or unreadable)."""
    raw = row.get("details")
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _str_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [str(v) for v in value]


@dataclass(slots=True)
class JobResult:
    """What the command printed (``result`` of a job)."""

    stdout: str = ""
    stderr: str = ""
    summary: str = ""

    def to_json(self) -> dict[str, str]:
        return {"stdout": self.stdout, "stderr": self.stderr, "summary": self.summary}

    @classmethod
    def from_json(cls, value: Any) -> JobResult | None:
        if not isinstance(value, dict):
            return None
        return cls(
            _text(value.get("stdout")), _text(value.get("stderr")), _text(value.get("summary"))
        )


@dataclass(slots=True)
class Job:
    """One command or script run on one client."""

    jid: str
    status: str = ""
    finished_at: datetime | None = None
    client_id: str = ""
    client_name: str = ""
    command: str = ""
    cwd: str = ""
    interpreter: str = ""
    pid: int | None = None
    started_at: datetime | None = None  # None: Go's zero time
    created_by: str = ""
    timeout_sec: int = 0
    multi_job_id: str | None = None
    schedule_id: str | None = None
    error: str = ""
    result: JobResult | None = None
    is_sudo: bool = False
    is_script: bool = False
    stream_result: bool = False

    def copy(self, **changes: Any) -> Job:
        return replace(self, **changes)

    def value(self, key: str) -> Any:
        """The JSON value of ``key``."""
        if key in ("finished_at", "started_at"):
            moment = getattr(self, key)
            if moment is None:
                return ZERO_TIME if key == "started_at" else None
            return format_time(moment)
        if key == "result":
            return self.result.to_json() if self.result is not None else None
        return getattr(self, key)

    def to_json(self) -> dict[str, Any]:
        """The full Job object (``run_cmd`` payload and API detail)."""
        return {key: self.value(key) for key in JOB_KEYS}

    def to_partial_json(
        self, fields: list[str] | None, result_fields: list[str] | None
    ) -> dict[str, Any]:
        """A list item with only the selected fields (upstream's ``jobPayload``)."""
        wanted = set(fields or ())
        out: dict[str, Any] = {}
        for key in JOB_KEYS:
            if key == "result":
                if result_fields:
                    out["result"] = self._partial_result(result_fields)
            elif key in wanted and key in JOB_FIELDS:
                out[key] = self.value(key)
        return out

    def _partial_result(self, result_fields: list[str]) -> dict[str, str] | None:
        if self.result is None:
            return None
        full = self.result.to_json()
        return {k: full[k] for k in ("stdout", "stderr", "summary") if k in result_fields}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Job:
        """A job as a client reports it (tolerates missing and old keys)."""
        return cls(
            jid=_text(obj.get("jid")),
            status=_text(obj.get("status")),
            finished_at=_time(obj.get("finished_at")),
            client_id=_text(obj.get("client_id")),
            client_name=_text(obj.get("client_name")),
            command=_text(obj.get("command")),
            cwd=_text(obj.get("cwd")),
            interpreter=_text(obj.get("interpreter")) or _text(obj.get("shell")),
            pid=_int(obj["pid"]) if isinstance(obj.get("pid"), int | float) else None,
            started_at=_time(obj.get("started_at")),
            created_by=_text(obj.get("created_by")),
            timeout_sec=_int(obj.get("timeout_sec")),
            multi_job_id=_opt_text(obj.get("multi_job_id")),
            schedule_id=_opt_text(obj.get("schedule_id")),
            error=_text(obj.get("error")),
            result=JobResult.from_json(obj.get("result")),
            is_sudo=obj.get("is_sudo") is True,
            is_script=obj.get("is_script") is True,
            stream_result=obj.get("stream_result") is True,
        )

    # --- jobs.db --------------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        """The ``details`` JSON object of the ``jobs`` row."""
        return {
            "command": self.command,
            "cwd": self.cwd,
            "is_sudo": self.is_sudo,
            "is_script": self.is_script,
            "interpreter": self.interpreter,
            "pid": self.pid,
            "timeout_sec": self.timeout_sec,
            "error": self.error,
            "result": self.result.to_json() if self.result is not None else None,
            "client_name": self.client_name,
        }

    def row(self) -> dict[str, Any]:
        """Bind parameters of an ``INSERT`` into ``jobs``."""
        return {
            "jid": self.jid,
            "status": self.status,
            "started_at": format_db_time(self.started_at) or "0001-01-01 00:00:00+00:00",
            "finished_at": format_db_time(self.finished_at),
            "created_by": self.created_by,
            "client_id": self.client_id,
            "multi_job_id": self.multi_job_id,
            "details": go_dumps(self.details()),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """A job from a ``jobs`` row (``details`` may be partial: only what was selected)."""
        details = _details(row)
        for key in DETAIL_KEYS:
            if f"d_{key}" in row:
                details[key] = _sql_json_value(row[f"d_{key}"], key)
        if "d_result_type" in row:
            details["result"] = (
                None
                if row["d_result_type"] != "object"
                else {k: row.get(f"d_result_{k}") or "" for k in ("stdout", "stderr", "summary")}
            )
        return cls(
            jid=str(row["jid"]),
            status=_text(row.get("status")),
            started_at=_time(row.get("started_at")),
            finished_at=_time(row.get("finished_at")),
            created_by=_text(row.get("created_by")),
            client_id=_text(row.get("client_id")),
            multi_job_id=_opt_text(row.get("multi_job_id")),
            schedule_id=_opt_text(row.get("schedule_id")),
            command=_text(details.get("command")),
            cwd=_text(details.get("cwd")),
            is_sudo=details.get("is_sudo") is True,
            is_script=details.get("is_script") is True,
            interpreter=_text(details.get("interpreter")),
            pid=_int(details["pid"]) if isinstance(details.get("pid"), int | float) else None,
            timeout_sec=_int(details.get("timeout_sec")),
            error=_text(details.get("error")),
            result=JobResult.from_json(details.get("result")),
            client_name=_text(details.get("client_name")),
        )


def _sql_json_value(value: Any, key: str) -> Any:
    """A ``json_extract`` result back as the JSON value (SQLite gives 0/1 for booleans)."""
    if key in ("is_sudo", "is_script"):
        return bool(value)
    return value


@dataclass(slots=True)
class ClientTags:
    """Tag targeting of a multi-client job: ``{"tags": [...], "operator": "AND|OR"}``."""

    tags: list[str] | None = None
    operator: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"tags": self.tags, "operator": self.operator}

    @classmethod
    def from_json(cls, value: Any) -> ClientTags | None:
        if not isinstance(value, dict):
            return None
        return cls(_str_list(value.get("tags")), _text(value.get("operator")))

    @property
    def match_all(self) -> bool:
        return self.operator.upper() == "AND"


@dataclass(slots=True)
class MultiJob:
    """A command or script sent to many clients; each gets its own child job."""

    jid: str
    started_at: datetime
    created_by: str
    schedule_id: str | None = None
    client_ids: list[str] | None = None
    group_ids: list[str] | None = None
    tags: ClientTags | None = None
    command: str = ""
    cwd: str = ""
    interpreter: str = ""
    timeout_sec: int = 0
    concurrent: bool = False
    abort_on_err: bool = True
    is_sudo: bool = False
    is_script: bool = False
    jobs: list[Job] = field(default_factory=list)

    def summary_json(self) -> dict[str, Any]:
        return {
            "jid": self.jid,
            "started_at": format_time(self.started_at),
            "created_by": self.created_by,
            "schedule_id": self.schedule_id,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary_json(),
            "client_ids": self.client_ids,
            "group_ids": self.group_ids,
            "tags": self.tags.to_json() if self.tags is not None else None,
            "command": self.command,
            "cwd": self.cwd,
            "interpreter": self.interpreter,
            "timeout_sec": self.timeout_sec,
            "concurrent": self.concurrent,
            "abort_on_err": self.abort_on_err,
            "jobs": [j.to_json() for j in self.jobs],
            "is_sudo": self.is_sudo,
            "is_script": self.is_script,
        }

    def details(self) -> dict[str, Any]:
        """The ``details`` JSON of ``multi_jobs`` (upstream's keys, plus ``is_script``)."""
        return {
            "client_ids": self.client_ids,
            "group_ids": self.group_ids,
            "tags": self.tags.to_json() if self.tags is not None else None,
            "command": self.command,
            "interpreter": self.interpreter,
            "cwd": self.cwd,
            "is_sudo": self.is_sudo,
            "timeout_sec": self.timeout_sec,
            "concurrent": self.concurrent,
            "abort_on_err": self.abort_on_err,
            "is_script": self.is_script,
        }

    def row(self) -> dict[str, Any]:
        return {
            "jid": self.jid,
            "started_at": format_db_time(self.started_at),
            "created_by": self.created_by,
            "schedule_id": self.schedule_id,
            "details": go_dumps(self.details()),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MultiJob:
        details = _details(row)
        return cls(
            jid=str(row["jid"]),
            started_at=_time(row.get("started_at")) or datetime.min,
            created_by=_text(row.get("created_by")),
            schedule_id=_opt_text(row.get("schedule_id")),
            client_ids=_str_list(details.get("client_ids")),
            group_ids=_str_list(details.get("group_ids")),
            tags=ClientTags.from_json(details.get("tags")),
            command=_text(details.get("command")),
            cwd=_text(details.get("cwd")),
            interpreter=_text(details.get("interpreter")),
            timeout_sec=_int(details.get("timeout_sec")),
            concurrent=details.get("concurrent") is True,
            abort_on_err=details.get("abort_on_err") is True,
            is_sudo=details.get("is_sudo") is True,
            is_script=details.get("is_script") is True,
        )
