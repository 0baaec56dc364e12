"""What travels in a file push: the ``upload`` request (§6.4) and the per-client outcome."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

STATUS_ERROR = "error"

# Upstream's text when a client does not know the ``upload`` request (typo kept: the UI shows it).
UNSUPPORTED = (
    "client doens't support uploads, please upgrade client to the latest version to make it work"
)
DISABLED = "uploads are disabled on this client, check [file-reception] enabled option"


@dataclass
class UploadedFile:
    """The ``upload`` request payload (Go ``UploadedFile``, untagged: PascalCase keys)."""

    id: str
    source_path: str
    destination: str
    mode: int = 0
    owner: str = ""
    group: str = ""
    force: bool = False
    sync: bool = False
    md5: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "SourceFilePath": self.source_path,
            "DestinationPath": self.destination,
            "DestinationFileMode": self.mode,
            "DestinationFileOwner": self.owner,
            "DestinationFileGroup": self.group,
            "ForceWrite": self.force,
            "Sync": self.sync,
            # Go encodes []byte as base64 (and a nil slice as null).
            "Md5Checksum": base64.b64encode(self.md5).decode() if self.md5 else None,
        }


@dataclass
class UploadOutcome:
    """One client's result, as broadcast on ``/ws/uploads`` and stored in the audit log."""

    client_id: str
    uuid: str
    filepath: str = ""
    size: int = 0
    message: str = ""
    status: str = ""

    @property
    def failed(self) -> bool:
        return self.status == STATUS_ERROR

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "uuid": self.uuid,
            "filepath": self.filepath,
            "size": self.size,
            "message": self.message,
            "status": self.status,
        }

    @classmethod
    def error(cls, client_id: str, upload_id: str, message: str) -> UploadOutcome:
        return cls(client_id, upload_id, message=message, status=STATUS_ERROR)

    @classmethod
    def from_reply(cls, client_id: str, payload: bytes) -> UploadOutcome:
        """The client's ``UploadResponse``; raises ``ValueError`` if it is not one."""
        value = json.loads(payload)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return cls(
            client_id,
            uuid=_text(value, "uuid"),
            filepath=_text(value, "filepath"),
            size=_int(value, "size"),
            message=_text(value, "message"),
            status=_text(value, "status"),
        )


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {key!r} must be an integer")
    return value
