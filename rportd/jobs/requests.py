"""Job requests from the API: strict decoding and validation with upstream's errors."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from rportd.gotypes import json_kind
from rportd.jobs.model import ClientTags

INTERPRETERS = ("cmd", "powershell", "tacoscript")
TACOSCRIPT = "tacoscript"


class JobRequestError(Exception):
    """A request that cannot run; status, title and detail as upstream answers them."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(title or detail)
        self.status = status
        self.title = title
        self.detail = detail

    @property
    def text(self) -> str:
        """The one-line form (upstream's ``err.Error()``): the cause if any, else the title."""
        return self.detail or self.title


def invalid_json(detail: str) -> JobRequestError:
    return JobRequestError(400, "Invalid JSON data.", detail)


_GO_TYPES = {str: "string", int: "int", bool: "bool", list: "[]string", dict: "object"}


def json_field(body: dict[str, Any], key: str, kind: type, struct: str) -> Any:
    """``body[key]`` checked like Go's decoder (``null`` = zero value)."""
    value = body.get(key)
    if value is None:
        return None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is int and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if isinstance(value, list) and ok:
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        raise invalid_json(
            f"json: cannot unmarshal {json_kind(value)} into Go struct field "
            f"{struct}.{key} of type {_GO_TYPES[kind]}"
        )
    return value


def check_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse keys outside ``allowed``, as Go's ``DisallowUnknownFields`` does."""
    for key in body:
        if key not in allowed:
            raise invalid_json(f'json: unknown field "{key}"')


@dataclass
class ExecuteInput:
    """Body of ``POST /clients/{id}/commands`` and ``/scripts``."""

    command: str = ""
    script: str = ""
    interpreter: str = ""
    cwd: str = ""
    is_sudo: bool = False
    timeout_sec: int = 0

    KEYS = ("command", "script", "interpreter", "cwd", "is_sudo", "timeout_sec")

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ExecuteInput:
        check_keys(body, cls.KEYS)
        s = "ExecuteInput"
        return cls(
            command=json_field(body, "command", str, s) or "",
            script=json_field(body, "script", str, s) or "",
            interpreter=json_field(body, "interpreter", str, s) or "",
            cwd=json_field(body, "cwd", str, s) or "",
            is_sudo=bool(json_field(body, "is_sudo", bool, s)),
            timeout_sec=json_field(body, "timeout_sec", int, s) or 0,
        )


@dataclass
class MultiJobRequest:
    """Body of ``POST /commands`` and ``/scripts`` and the first ``/ws/*`` message."""

    client_ids: list[str] | None = None
    group_ids: list[str] | None = None
    tags: ClientTags | None = None
    command: str = ""
    script: str = ""
    cwd: str = ""
    is_sudo: bool = False
    interpreter: str = ""
    timeout_sec: int = 0
    execute_concurrently: bool = False
    abort_on_error: bool | None = None

    KEYS = (
        "client_ids",
        "group_ids",
        "tags",
        "command",
        "script",
        "cwd",
        "is_sudo",
        "interpreter",
        "timeout_sec",
        "execute_concurrently",
        "abort_on_error",
    )

    @classmethod
    def parse(cls, body: Any) -> MultiJobRequest:
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise invalid_json(
                f"json: cannot unmarshal {json_kind(body)} into Go value of type "
                "jobs.MultiJobRequest"
            )
        check_keys(body, cls.KEYS)
        return cls.read_fields(body, "MultiJobRequest")

    @classmethod
    def read_fields(cls, body: dict[str, Any], struct: str) -> MultiJobRequest:
        """The job fields of a decoded body; type errors name ``struct`` as Go's would."""
        s = struct
        tags: ClientTags | None = None
        raw_tags = json_field(body, "tags", dict, s)
        if raw_tags is not None:
            check_keys(raw_tags, ("tags", "operator"))
            t = "JobClientTags"
            tags = ClientTags(
                json_field(raw_tags, "tags", list, t),
                json_field(raw_tags, "operator", str, t) or "",
            )
        abort = json_field(body, "abort_on_error", bool, s)
        return cls(
            client_ids=json_field(body, "client_ids", list, s),
            group_ids=json_field(body, "group_ids", list, s),
            tags=tags,
            command=json_field(body, "command", str, s) or "",
            script=json_field(body, "script", str, s) or "",
            cwd=json_field(body, "cwd", str, s) or "",
            is_sudo=bool(json_field(body, "is_sudo", bool, s)),
            interpreter=json_field(body, "interpreter", str, s) or "",
            timeout_sec=json_field(body, "timeout_sec", int, s) or 0,
            execute_concurrently=bool(json_field(body, "execute_concurrently", bool, s)),
            abort_on_error=abort,
        )

    def to_json(self) -> dict[str, Any]:
        """The request as upstream's audit log stores it (Go field order)."""
        return {
            "client_ids": self.client_ids,
            "group_ids": self.group_ids,
            "tags": self.tags.to_json() if self.tags is not None else None,
            "command": self.command,
            "script": self.script,
            "cwd": self.cwd,
            "is_sudo": self.is_sudo,
            "interpreter": self.interpreter,
            "timeout_sec": self.timeout_sec,
            "execute_concurrently": self.execute_concurrently,
            "abort_on_error": self.abort_on_error,
        }

    @property
    def abort_on_err(self) -> bool:
        """``abort_on_error`` defaults to true."""
        return True if self.abort_on_error is None else self.abort_on_error


def check_command(command: str) -> None:
    if command == "":
        raise JobRequestError(400, "Command cannot be empty.")


def interpreter_problem(interpreter: str, is_script: bool) -> str | None:
    """Why ``interpreter`` cannot run a command (scripts accept any), or ``None``."""
    if interpreter == "" or is_script:
        return None
    if interpreter == TACOSCRIPT:
        return f"{TACOSCRIPT} interpreter can't be used for commands execution"
    if interpreter in INTERPRETERS:
        return None
    return f"expected interpreter to be one of: [{' '.join(INTERPRETERS)}], actual: {interpreter}"


def check_interpreter(
    interpreter: str, is_script: bool, title: str = "Invalid interpreter."
) -> None:
    problem = interpreter_problem(interpreter, is_script)
    if problem is not None:
        raise JobRequestError(400, title, problem)


def decode_script(script: str) -> str:
    """The script text from its base64 form (standard alphabet, padded; newlines ignored)."""
    if script == "":
        raise JobRequestError(400, "Missing script body")
    cleaned = script.replace("\r", "").replace("\n", "")
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise JobRequestError(
            400,
            "failed to decode script payload from base64",
            "the script must be base64 encoded (standard alphabet with padding)",
        ) from None
    return raw.decode("utf-8", "replace")
