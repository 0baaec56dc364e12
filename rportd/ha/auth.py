"""Node-to-node calls signed with ``[ha] cluster_secret`` (HMAC, never sent in clear)."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

HEADER = "X-Rportd-Cluster"
MAX_SKEW = 60.0


class ClusterAuthError(Exception):
    """A node-to-node call could not be authenticated."""


@dataclass(frozen=True)
class ClusterCaller:
    """Who signed a node-to-node call."""

    node_id: str
    epoch: int


def _mac(secret: str, node_id: str, epoch: int, ts: int, method: str, path: str) -> str:
    text = f"{node_id}|{epoch}|{ts}|{method.upper()}|{path}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, node_id: str, epoch: int, method: str, path: str) -> str:
    """The header value authenticating ``method path`` from this node."""
    ts = int(time.time())
    sig = _mac(secret, node_id, epoch, ts, method, path)
    return f"node={node_id};epoch={epoch};ts={ts};sig={sig}"


def verify(secret: str, header: str | None, method: str, path: str) -> ClusterCaller:
    """Check a signed header; raise :class:`ClusterAuthError` saying what is wrong."""
    if not secret:
        raise ClusterAuthError("this node has no [ha] cluster_secret")
    if not header:
        raise ClusterAuthError(f"missing {HEADER} header")
    fields = dict(part.split("=", 1) for part in header.split(";") if "=" in part)
    try:
        node_id, epoch, ts, sig = (
            fields["node"],
            int(fields["epoch"]),
            int(fields["ts"]),
            fields["sig"],
        )
    except (KeyError, ValueError):
        raise ClusterAuthError(f"malformed {HEADER} header") from None
    if abs(time.time() - ts) > MAX_SKEW:
        raise ClusterAuthError("signature expired: node clocks differ by more than 60 s")
    expected = _mac(secret, node_id, epoch, ts, method, path)
    if not hmac.compare_digest(expected, sig):
        raise ClusterAuthError("bad signature: cluster_secret differs between nodes")
    return ClusterCaller(node_id, epoch)
