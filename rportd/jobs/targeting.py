"""Which clients a multi-client job or a file push targets: client ids, groups or tags."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from rportd.clients.access import ClientGroupLike
from rportd.clients.model import Client
from rportd.jobs.model import ClientTags
from rportd.jobs.requests import JobRequestError


class ClientLookup(Protocol):
    """The client registry as targeting needs it."""

    def get(self, client_id: str) -> Client | None: ...

    def all(self) -> Iterable[Client]: ...


class TargetingRequest(Protocol):
    """Which clients a request targets (a multi-client job, a file push)."""

    @property
    def client_ids(self) -> list[str] | None: ...

    @property
    def group_ids(self) -> list[str] | None: ...

    @property
    def tags(self) -> ClientTags | None: ...


class ClientGroupProvider(Protocol):
    """Client groups by id (``server.client_groups``)."""

    def get(self, group_id: str) -> ClientGroupLike | None: ...


def _by_tags(clients: Iterable[Client], tags: ClientTags) -> list[Client]:
    wanted = tags.tags or []
    if tags.match_all:
        return [c for c in clients if all(t in (c.tags or ()) for t in wanted)]
    return [c for c in clients if any(t in wanted for t in (c.tags or ()))]


def check_targeting(request: TargetingRequest) -> None:
    """Targeting options must be given, alone, and tags must not be empty."""
    if request.client_ids is None and request.group_ids is None and request.tags is None:
        raise JobRequestError(
            400,
            "Missing targeting parameters.",
            "please specify targeting options, such as client ids, groups ids or tags",
        )
    if request.tags is not None and (
        request.client_ids is not None or request.group_ids is not None
    ):
        raise JobRequestError(
            400,
            "Multiple targeting parameters.",
            "multiple targeting options are not supported. Please specify only one",
        )
    if request.tags is not None and not request.tags.tags:
        raise JobRequestError(400, "No tags specified.", "please specify tags in the tags list")


def resolve_targets(
    request: TargetingRequest, clients: ClientLookup, groups: ClientGroupProvider
) -> list[Client]:
    """The ordered target clients (explicit ids first, then group members; or by tags).

    Disconnected clients are included: their jobs fail with ``client is not connected``.
    """
    check_targeting(request)
    at_least_one = JobRequestError(400, "at least 1 client should be specified")
    if request.tags is not None:
        found = _by_tags(clients.all(), request.tags)
        if not found:
            raise at_least_one
        return found

    matched_groups: list[ClientGroupLike] = []
    for group_id in request.group_ids or ():
        group = groups.get(group_id)
        if group is None:
            raise JobRequestError(400, f'Unknown group with id="{group_id}".')
        matched_groups.append(group)
    group_clients = (
        [c for c in clients.all() if any(g.matches(c) for g in matched_groups)]
        if matched_groups
        else []
    )

    ordered: list[Client] = []
    used: set[str] = set()
    for client_id in request.client_ids or ():
        client = clients.get(client_id)
        if client is None:
            raise JobRequestError(404, f'Client with id="{client_id}" not found.')
        if client_id not in used:
            used.add(client_id)
            ordered.append(client)
    for client in group_clients:
        if client.id not in used:
            used.add(client.id)
            ordered.append(client)

    if request.group_ids and not group_clients and not request.client_ids:
        raise JobRequestError(400, "no active clients belong to the selected group(s)")
    if not ordered:
        raise at_least_one
    return ordered
