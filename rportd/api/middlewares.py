"""API middlewares: errors to the envelope, IP bans, authentication."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from rportd.api.context import AUTH_KEY, SERVER_KEY, set_identity
from rportd.api.errors import ApiError, ErrorItem
from rportd.api.guards import Handler
from rportd.api.responses import json_response
from rportd.api.security import check_token_scope
from rportd.auth.accounts import AccountError
from rportd.ha.changelog import ReadOnlyReplica, WriteNotReplicated, tracking_changes
from rportd.httputil import client_ip
from rportd.store.external import DatabaseError, DatabaseUnavailable

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"
BANNED_TEXT = "Too many bad attempts. Please try later."


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn errors into upstream's answers (JSON envelope, or its plain-text cases)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.to_json(), exc.status)
    except AccountError as exc:
        items = [ErrorItem(title, detail) for title, detail in exc.items]
        return json_response(ApiError(exc.status, exc.title, items=items).to_json(), exc.status)
    except ReadOnlyReplica as exc:
        ha = request.app[SERVER_KEY].ha
        refusal = (ha.write_refusal() if ha else None) or str(exc)
        return json_response(ApiError(403, refusal).to_json(), 403)
    except WriteNotReplicated as exc:
        log.warning("API %s %s: %s", request.method, request.path, exc)
        return json_response(ApiError(503, str(exc)).to_json(), 503)
    except DatabaseUnavailable as exc:
        log.warning("API %s %s: %s", request.method, request.path, exc)
        return json_response(ApiError(503, str(exc)).to_json(), 503)
    except DatabaseError as exc:
        log.error("API %s %s: %s", request.method, request.path, exc)
        return json_response(ApiError(500, str(exc)).to_json(), 500)
    except web.HTTPRequestEntityTooLarge:
        return web.Response(
            status=400,
            text=f"Request data exceeds the limit of {request.app._client_max_size} bytes: "
            "http: request body too large",
        )
    except web.HTTPNotFound:
        return web.Response(status=404, text="404 page not found")
    except web.HTTPMethodNotAllowed:
        return web.Response(status=405)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("API %s %s failed", request.method, request.path)
        return json_response(ApiError(500, str(exc) or type(exc).__name__).to_json(), 500)


@web.middleware
async def synchronous_replication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``[ha] synchronous``: answer a write only once a secondary has stored it."""
    ha = request.app[SERVER_KEY].ha
    if ha is None or ha.changelog.synchronous_timeout is None:
        return await handler(request)
    with tracking_changes() as tracked:
        response = await handler(request)
    if tracked.last:
        await ha.changelog.wait_replicated(tracked.last)
    return response


@web.middleware
async def ip_ban(request: web.Request, handler: Handler) -> web.StreamResponse:
    """423 for every API request from an IP banned after too many failed logins."""
    if request.path.startswith(API_PREFIX):
        ban = request.app[AUTH_KEY].ip_ban
        if ban.enabled and ban.is_banned(client_ip(request)):
            return web.Response(status=423, text=BANNED_TEXT)
    return await handler(request)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every route not marked public."""
    route_handler = request.match_info.handler
    if not request.path.startswith(API_PREFIX) or getattr(route_handler, "rportd_public", False):
        return await handler(request)
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception
    auth = request.app[AUTH_KEY]
    identity = await auth.authenticate(
        request, bearer_only=getattr(route_handler, "rportd_bearer_only", False)
    )
    check_token_scope(identity, request)
    set_identity(request, identity)
    return await handler(request)


@web.middleware
async def replica_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a secondary, refuse writes to replicated data before they start (403)."""
    if getattr(request.match_info.handler, "rportd_replicated", False):
        ha = request.app[SERVER_KEY].ha
        refusal = ha.write_refusal() if ha else None
        if refusal:
            raise ApiError(403, refusal)
    return await handler(request)
