"""What a node remembers about its place in the cluster (``data_dir/ha-state.json``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from rportd.store.files import atomic_write_text

PRIMARY = "primary"
SECONDARY = "secondary"

ACTIVE = "active"
STANDBY = "standby"
DRAINING = "draining"
FENCED = "fenced"


@dataclass
class NodeState:
    """Persisted identity, epoch and effective role (a promotion outlives the config)."""

    node_id: str
    epoch: int
    role: str
    primary: str = ""

    @classmethod
    async def load(cls, path: Path, role: str, primary: str) -> NodeState:
        """The saved state, or a fresh one from the configured role."""

        def read() -> NodeState | None:
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                return None
            return cls(
                node_id=str(data["node_id"]),
                epoch=int(data["epoch"]),
                role=str(data["role"]),
                primary=str(data.get("primary", "")),
            )

        state = await asyncio.to_thread(read)
        if state is None:
            state = cls(uuid.uuid4().hex, 1 if role == PRIMARY else 0, role, primary)
        return state

    async def save(self, path: Path) -> None:
        await asyncio.to_thread(atomic_write_text, path, json.dumps(asdict(self), indent=1) + "\n")
