"""Why a tunnel cannot be created, started or changed, in upstream's words."""

from __future__ import annotations

# Error codes upstream puts in the API error item (api.md §2.2).
LOCAL_PORT_IN_USE = "ERR_CODE_LOCAL_PORT_IN_USE"
REMOTE_PORT_NOT_OPEN = "ERR_CODE_REMOTE_PORT_NOT_OPEN"
TUNNEL_EXIST = "ERR_CODE_TUNNEL_EXIST"
TUNNEL_TO_PORT_EXIST = "ERR_CODE_TUNNEL_TO_PORT_EXIST"
URI_SCHEME_LENGTH_EXCEED = "ERR_CODE_URI_SCHEME_LENGTH_EXCEED"
INVALID_ACL = "ERR_CODE_INVALID_ACL"


class TunnelError(Exception):
    """A refusal: ``str(exc)`` is the title; ``status`` the HTTP status the API answers."""

    def __init__(self, title: str, status: int = 409, *, detail: str = "", code: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.status = status
        self.detail = detail
        self.code = code


def bad_request(title: str, *, detail: str = "", code: str = "") -> TunnelError:
    return TunnelError(title, 400, detail=detail, code=code)
