"""From form values to a file push: targeting, destination, mode and flags (upstream's order).

Upstream checks, in this order: targeting (``client_id``/``group_id``/``tags``), then
``mode``/``force``/``sync``, the ``upload`` file, the destination (empty, then
``BAD_DESTINATION``), then the caller's access to every target.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rportd.clients.model import Client
from rportd.gotypes import strict_loads
from rportd.jobs.model import ClientTags
from rportd.jobs.requests import JobRequestError
from rportd.uploads.errors import UploadError
from rportd.uploads.form import ReceivedFile, UploadForm

# Server-side refusal (the clients have their own protected globs).
DENIED_PREFIXES = ("/proc/", "/sys/", "/dev/", "/run/")
MAX_MODE = 0o7777
_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_OCTAL = re.compile(r"[+-]?[0-7]+")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True)
class Targeting:
    """``client_id`` / ``group_id`` values (None when absent) and the ``tags`` object."""

    client_ids: list[str] | None
    group_ids: list[str] | None
    tags: ClientTags | None


@dataclass
class PushRequest:
    """A validated file push, ready to store and send."""

    id: str
    destination: str
    mode: int
    owner: str
    group: str
    force: bool
    sync: bool
    file: ReceivedFile
    targets: list[Client]


def _targeting(form: UploadForm) -> Targeting:
    tags_values = form.values.get("tags")
    tags: ClientTags | None = None
    if tags_values:
        if len(tags_values) > 1:
            raise UploadError(400, "tags form value must only contain a single element")
        try:
            value = strict_loads(tags_values[0])
        except ValueError as exc:
            raise UploadError(400, f"invalid tags value: {exc}") from None
        if value is not None:
            tags = ClientTags.from_json(value)
            if tags is None:
                raise UploadError(
                    400, 'invalid tags value: expected {"tags": [...], "operator": "AND|OR"}'
                )
    return Targeting(form.values.get("client_id"), form.values.get("group_id"), tags)


def _parse_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UploadError(400, f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _parse_mode(text: str) -> int:
    problem = "invalid syntax"
    if _OCTAL.fullmatch(text):
        mode = int(text, 8)
        if 0 <= mode <= MAX_MODE:
            return mode
        problem = "value out of range"
    raise UploadError(
        400,
        f'failed to parse file mode value {text}: strconv.ParseInt: parsing "{text}": {problem}',
        f"mode is octal permission bits between 0 and {MAX_MODE:o}, e.g. 0644",
    )


def _upload_id(form: UploadForm) -> str:
    given = form.first("id")
    if not given:
        return str(uuid.uuid4())
    if not _ID.fullmatch(given):
        raise UploadError(
            400,
            f'invalid id "{given}"',
            "an upload id has at most 128 letters, digits, '.', '_' or '-' "
            "and does not start with '.'; leave it out to get a UUID",
        )
    return given


def parse_push(
    form: UploadForm,
    resolve: Callable[[Targeting], list[Client]],
    can_access: Callable[[Client], bool],
) -> PushRequest:
    """Validate the form; ``resolve`` turns targeting into clients (JobRequestError on failure)."""
    try:
        targets = resolve(_targeting(form))
    except JobRequestError as exc:
        raise UploadError(exc.status, exc.title, exc.detail) from None
    mode_text = form.first("mode")
    mode = _parse_mode(mode_text) if mode_text is not None else 0
    force_text = form.first("force")
    force = _parse_bool(force_text) if force_text is not None else False
    sync_text = form.first("sync")
    sync = _parse_bool(sync_text) if sync_text is not None else False
    if form.file is None:
        raise UploadError(400, "http: no such file", 'the file goes in the form part "upload"')
    upload_id = _upload_id(form)
    destination = form.first("dest") or ""
    if not destination:
        raise UploadError(400, "empty destination file path")
    for prefix in DENIED_PREFIXES:
        if destination.startswith(prefix):
            raise UploadError(
                400, "upload denied", f"uploads to {prefix} are forbidden", "BAD_DESTINATION"
            )
    denied = [c.id for c in targets if not can_access(c)]
    if denied:
        raise UploadError(
            403,
            "upload forbidden",
            f"Access denied to client(s) with ID(s): {', '.join(denied)}",
            "ACCESS_CONTROL_VIOLATION",
        )
    return PushRequest(
        id=upload_id,
        destination=destination,
        mode=mode,
        owner=form.first("user") or "",
        group=form.first("group") or "",
        force=force,
        sync=sync,
        file=form.file,
        targets=targets,
    )
