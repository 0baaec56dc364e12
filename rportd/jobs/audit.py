"""Audit log entries of jobs that are not plain REST calls (upstream's choices).

REST starts are recorded by the API's audit middleware; these are the others:
``execute.start`` of a WebSocket run (one entry per target client) and
``execute.done`` when a client reports a result.
"""

from __future__ import annotations

from typing import Any

from rportd.auditlog.entry import (
    ACTION_EXECUTE_DONE,
    ACTION_EXECUTE_START,
    APP_CLIENT_COMMAND,
    APP_CLIENT_SCRIPT,
    AuditEntry,
    as_json_text,
)
from rportd.auditlog.store import AuditLog
from rportd.clients.model import Client
from rportd.jobs.model import Job
from rportd.jobs.targeting import ClientLookup


def application(is_script: bool) -> str:
    return APP_CLIENT_SCRIPT if is_script else APP_CLIENT_COMMAND


async def record_start(
    auditlog: AuditLog,
    *,
    is_script: bool,
    jid: str,
    username: str,
    remote_ip: str,
    request: dict[str, Any],
    targets: list[Client],
) -> None:
    """``execute.start`` of a multi-client run started outside the REST routes."""
    await auditlog.add_many(
        [
            AuditEntry(
                application=application(is_script),
                action=ACTION_EXECUTE_START,
                username=username,
                remote_ip=remote_ip,
                affected_id=jid,
                client_id=client.id,
                client_hostname=client.hostname,
                request=as_json_text(request),
            )
            for client in targets
        ]
    )


class ResultAudit:
    """Records ``execute.done`` for every result a client reports."""

    def __init__(self, auditlog: AuditLog, clients: ClientLookup) -> None:
        self.auditlog = auditlog
        self.clients = clients

    async def __call__(self, job: Job) -> None:
        client = self.clients.get(job.client_id)
        await self.auditlog.add(
            AuditEntry(
                application=application(job.is_script),
                action=ACTION_EXECUTE_DONE,
                affected_id=job.multi_job_id or job.jid,
                client_id=job.client_id,
                client_hostname=client.hostname if client is not None else "",
                response=as_json_text(job.to_json()),
            )
        )
