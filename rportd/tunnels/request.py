"""A tunnel requested through the API: ``PUT /clients/{id}/tunnels`` query parameters.

Parsing and validation happen in upstream's order with upstream's texts
(api.md §5.5); checks that need the client or the ports are in the service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rportd.config.types import parse_go_duration
from rportd.tunnels.acl import ACLError, TunnelACL
from rportd.tunnels.errors import INVALID_ACL, URI_SCHEME_LENGTH_EXCEED, bad_request
from rportd.wire.messages import Remote

ZERO_HOST = "0.0.0.0"
LOCAL_HOST = "127.0.0.1"
PROTOCOLS = ("tcp", "udp", "tcp+udp")
URI_SCHEME_MAX_LENGTH = 15
PROXY_SCHEMES = frozenset({"http", "https", "vnc", "rdp"})

IDLE_TIMEOUT_DEFAULT_MINUTES = 5
IDLE_TIMEOUT_MAX_MINUTES = 7 * 24 * 60
AUTO_CLOSE_MAX_NS = 31 * 24 * 3600 * 10**9

_PROTOCOL_SUFFIX = re.compile(r"(.*)/(tcp|udp|tcp\+udp)\Z")
_PORT = re.compile(r"[0-9]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _is_host(text: str) -> bool:
    """What Go's ``url.Parse`` accepts for a colon-free string."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return False
    return not _BAD_ESCAPE.search(text.split("?", 1)[0]) and not _BAD_ESCAPE.search(
        text.partition("#")[2]
    )


def parse_remote_spec(spec: str) -> Remote:
    """``[lhost:][lport:]rhost:rport[/protocol]`` as upstream's ``NewRemote`` reads it.

    Raises ``ValueError`` with upstream's text (``Invalid remote``, ``Missing ports``,
    ``Invalid host``).
    """
    protocol = "tcp"
    match = _PROTOCOL_SUFFIX.search(spec)
    if match:
        spec, protocol = match.group(1), match.group(2)
    parts = spec.split(":")
    if len(parts) >= 5:
        raise ValueError("Invalid remote")
    lhost = lport = rhost = rport = ""
    for part in reversed(parts):
        if _PORT.fullmatch(part):
            if rport == "":
                rport = part
            else:
                lport = part
            continue
        if rport == "" and lport == "":
            raise ValueError("Missing ports")
        if not _is_host(part):
            raise ValueError("Invalid host")
        if rhost == "":
            rhost = part
        else:
            lhost = part
    if lhost == "" and lport != "":
        lhost = ZERO_HOST
    return Remote(
        rhost=rhost or LOCAL_HOST, rport=rport, lhost=lhost, lport=lport, protocol=protocol
    )


def parse_go_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``; ``ValueError`` for anything else."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _go_atoi(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


@dataclass
class TunnelRequest:
    """What the API asked for: the remote plus whether to check the remote port first."""

    remote: Remote
    check_port: bool


def idle_timeout_minutes(raw: str, skip_raw: str) -> int:
    """``idle-timeout-minutes`` / ``skip-idle-timeout`` as upstream resolves them."""
    try:
        skip = parse_go_bool(skip_raw)
    except ValueError:
        skip = False
    if raw != "" and skip:
        raise bad_request(
            f"conflicting parameters idle timeout {raw} and skip idle timeout {raw}, either "
            "decide for skipping an idle timeout or provide a non empty timeout value"
        )
    if skip:
        return 0
    if raw == "":
        return IDLE_TIMEOUT_DEFAULT_MINUTES
    try:
        minutes = _go_atoi(raw)
    except ValueError as exc:
        raise bad_request("invalid idle timeout param", detail=str(exc)) from None
    if not 0 <= minutes <= IDLE_TIMEOUT_MAX_MINUTES:
        raise bad_request(
            f"idle timeoout param should be in range [0,{IDLE_TIMEOUT_MAX_MINUTES * 60 * 10**9}]"
        )
    return minutes


def auto_close_ns(raw: str) -> int:
    """``auto-close`` (a Go duration, 0 to 744h) in nanoseconds; ``""`` = never."""
    if raw == "":
        return 0
    try:
        seconds = parse_go_duration(raw)
    except ValueError as exc:
        raise bad_request("invalid tunnel auto-close format", detail=str(exc)) from None
    value = round(seconds * 10**9)
    if value < 0:
        raise bad_request("tunnel auto-close value should be more than 0")
    if value > AUTO_CLOSE_MAX_NS:
        raise bad_request("tunnel auto-close value should not be more than 744h0m0s")
    return value


def parse_tunnel_request(query: Mapping[str, str], *, proxy_enabled: bool) -> TunnelRequest:
    """Validate the query of ``PUT /clients/{id}/tunnels`` in upstream's order.

    Raises :class:`~rportd.tunnels.errors.TunnelError` (status 400) on bad input.
    """

    def get(name: str) -> str:
        return query.get(name, "")

    local, remote_addr, protocol = get("local"), get("remote"), get("protocol")
    spec = f"{local}:{remote_addr}" if local else remote_addr
    if protocol:
        spec += "/" + protocol
    try:
        remote = parse_remote_spec(spec)
    except ValueError as exc:
        raise bad_request(f'failed to decode "{spec}": {exc}') from None

    if get("name"):
        remote.name = get("name")
    scheme = get("scheme")
    if len(scheme) > URI_SCHEME_MAX_LENGTH:
        raise bad_request(
            "Invalid URI scheme.", detail="Exceeds the max length.", code=URI_SCHEME_LENGTH_EXCEED
        )
    if scheme:
        remote.scheme = scheme

    try:
        http_proxy = parse_go_bool(get("http_proxy") or "false")
    except ValueError as exc:
        raise bad_request(f"invalid http_proxy param: {exc}") from None
    if http_proxy and not proxy_enabled:
        raise bad_request("creation of tunnel proxy not enabled")
    if http_proxy and remote.scheme is not None and remote.scheme not in PROXY_SCHEMES:
        raise bad_request(f"tunnel proxy not allowed with scheme {remote.scheme}")
    if http_proxy and remote.protocol not in ("tcp", "tcp+udp"):
        raise bad_request(f"tunnel proxy not allowed with protcol {remote.protocol}")
    remote.http_proxy = http_proxy
    if get("host_header"):
        if not http_proxy:
            raise bad_request("host_header not allowed when http_proxy is false")
        remote.host_header = get("host_header")

    user, password = get("auth_user"), get("auth_password")
    if user or password:
        if not http_proxy:
            raise bad_request(
                "http basic authentication requires http_proxy to be activated on the "
                "requested tunnel"
            )
        if password and not user:
            raise bad_request("auth_password requires auth_user")
        if user and not password:
            raise bad_request("auth_user requires auth_password")
        remote.auth_user, remote.auth_password = user, password

    remote.idle_timeout_minutes = idle_timeout_minutes(
        get("idle-timeout-minutes"), get("skip-idle-timeout")
    )
    remote.auto_close = auto_close_ns(get("auto-close"))

    acl = get("acl")
    try:
        TunnelACL.parse(acl)
    except ACLError as exc:
        raise bad_request(f"Invalid ACL: {exc}", code=INVALID_ACL) from None
    if acl:
        remote.acl = acl
    return TunnelRequest(remote, check_port=get("check_port") != "0")
