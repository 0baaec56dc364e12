"""Route guards: public routes, admin-only routes and function permissions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from aiohttp import web

from rportd.api.context import identity_of
from rportd.api.errors import forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NOT_ADMIN = "current user should belong to Administrators group to access this resource"


def public(handler: Handler) -> Handler:
    """No authentication (the handler authenticates itself if it needs to)."""
    handler.rportd_public = True  # type: ignore[attr-defined]
    return handler


def bearer_only(handler: Handler) -> Handler:
    """Only a bearer token authenticates this route (``/verify-2fa``)."""
    handler.rportd_bearer_only = True  # type: ignore[attr-defined]
    return handler


def writes_replicated(handler: Handler) -> Handler:
    """The route changes replicated data: refused on a secondary (HA)."""
    handler.rportd_replicated = True  # type: ignore[attr-defined]
    return handler


def admin_only(handler: Handler) -> Handler:
    """403 unless the caller is in ``Administrators``."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not identity_of(request).is_admin:
            raise forbidden(NOT_ADMIN)
        return await handler(request)

    return guarded


def require_admin(request: web.Request) -> None:
    if not identity_of(request).is_admin:
        raise forbidden(NOT_ADMIN)


def require_permission(request: web.Request, permission: str) -> None:
    if not identity_of(request).permissions.get(permission, False):
        raise forbidden(f'user does not have "{permission}" permission')


def permission(name: str) -> Callable[[Handler], Handler]:
    """403 unless the caller's groups grant function permission ``name``."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            require_permission(request, name)
            return await handler(request)

        return guarded

    return decorate
