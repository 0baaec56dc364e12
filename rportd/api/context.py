"""Typed application and request state of the API app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rportd.api.security import Authenticator, Identity

if TYPE_CHECKING:
    from rportd.app import RportServer

SERVER_KEY: web.AppKey[RportServer] = web.AppKey("rportd_server")
AUTH_KEY = web.AppKey("rportd_authenticator", Authenticator)
_IDENTITY = web.RequestKey("rportd_identity", Identity)


def server_of(request: web.Request) -> RportServer:
    return request.app[SERVER_KEY]


def set_identity(request: web.Request, identity: Identity) -> None:
    request[_IDENTITY] = identity


def identity_of(request: web.Request) -> Identity:
    """The authenticated caller (set by the auth middleware)."""
    return request[_IDENTITY]
