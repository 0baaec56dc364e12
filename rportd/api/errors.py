"""API errors in upstream's envelope: ``{"errors": [{"code", "title", "detail"}]}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorItem:
    """One entry of the ``errors`` array."""

    title: str
    detail: str = ""
    code: str = ""

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "title": self.title, "detail": self.detail}


class ApiError(Exception):
    """An error answered with the JSON error envelope and an HTTP status."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        code: str = "",
        *,
        items: list[ErrorItem] | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.items = items if items else [ErrorItem(title, detail, code)]

    @property
    def title(self) -> str:
        return self.items[0].title

    def to_json(self) -> dict[str, Any]:
        return {"errors": [item.to_json() for item in self.items]}


def bad_request(title: str, detail: str = "", code: str = "") -> ApiError:
    return ApiError(400, title, detail, code)


def unauthorized(title: str = "unauthorized", detail: str = "") -> ApiError:
    return ApiError(401, title, detail)


def forbidden(title: str, detail: str = "") -> ApiError:
    return ApiError(403, title, detail)


def not_found(title: str, detail: str = "", code: str = "") -> ApiError:
    return ApiError(404, title, detail, code)


def conflict(title: str, detail: str = "", code: str = "") -> ApiError:
    return ApiError(409, title, detail, code)
