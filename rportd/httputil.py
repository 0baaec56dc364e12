"""HTTP helpers shared by the client listener and the API."""

from __future__ import annotations

import ipaddress

from aiohttp import web


def client_ip(request: web.BaseRequest) -> str:
    """First public address of ``X-Forwarded-For`` then the peer; else the first valid one."""
    candidates = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if peer:
        candidates.append(str(peer[0]))
    first_valid = ""
    for text in candidates:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if addr.is_global:
            return text
        first_valid = first_valid or text
    return first_valid
