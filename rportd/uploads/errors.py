"""Why a file push request is refused: status, title, detail and code as upstream answers."""

from __future__ import annotations


class UploadError(Exception):
    """A refused ``POST /files``."""

    def __init__(self, status: int, title: str, detail: str = "", code: str = "") -> None:
        super().__init__(title or detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
