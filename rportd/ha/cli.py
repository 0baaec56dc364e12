"""``rportd ha status|promote -c FILE``: ask the local node, signed with the cluster secret."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from rportd.config import Config, ConfigError, load_config
from rportd.ha.peers import PeerClient


def local_api_url(config: Config) -> str:
    """The API base URL of the node configured in ``config``, seen from this host."""
    host, _, port = config.api.address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.api.cert_file else "http"
    return f"{scheme}://{host}:{port}"


async def _call(config: Config, method: str, path: str) -> tuple[int, Any]:
    client = PeerClient(config.ha.cluster_secret, lambda: ("cli", 0))
    try:
        return await client.call(method, local_api_url(config), path, timeout=15.0)
    finally:
        await client.close()


def describe(status: dict[str, Any]) -> str:
    """The status as a person reads it."""
    rep = status.get("replication", {})
    lines = [
        f"role:      {status['role']}",
        f"state:     {status['state']}"
        + (f" ({status['reason']})" if status.get("reason") else ""),
        f"epoch:     {status['epoch']}",
        f"node id:   {status['node_id']}",
        f"clients:   {status['clients']}",
    ]
    if status["role"] == "secondary":
        lag = rep.get("lag")
        ago = rep.get("last_message_seconds_ago")
        lines.append(f"primary:   {status['primary']}")
        lines.append(
            f"replication: position {rep.get('position')}, primary at "
            f"{rep.get('primary_position')}, lag {lag} change(s)"
            + (f", last message {ago:.1f}s ago" if isinstance(ago, int | float) else "")
        )
    else:
        lines.append(f"replication: position {rep.get('position')}")
    for peer in status.get("peers", []):
        if peer.get("reachable"):
            seen = (
                f"{peer['role']}/{peer['state']}, epoch {peer['epoch']}, {peer['clients']} clients"
            )
        else:
            seen = f"unreachable ({peer.get('error') or 'not probed yet'})"
        lines.append(f"peer {peer['url']}: {seen}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="rportd ha", description="High-availability commands.")
    parser.add_argument("command", choices=("status", "promote"))
    parser.add_argument("-c", "--config", required=True, help="the node's rportd.conf")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    ns = parser.parse_args(list(argv))
    try:
        config = load_config(ns.config, search_cwd=False)
    except ConfigError as exc:
        print(f"rportd ha: configuration error: {exc}", file=sys.stderr)
        return 2
    if not config.ha.cluster_secret or not config.api.address:
        print(
            "rportd ha: the config needs [ha] cluster_secret and [api] address to reach the node",
            file=sys.stderr,
        )
        return 2
    method, path = ("GET", "/status") if ns.command == "status" else ("POST", "/promote")
    try:
        status, body = asyncio.run(_call(config, method, path))
    except OSError as exc:
        print(
            f"rportd ha: cannot reach the node at {local_api_url(config)}: {exc}", file=sys.stderr
        )
        return 1
    if status != 200 or not isinstance(body, dict):
        title = ""
        if isinstance(body, dict) and body.get("errors"):
            title = body["errors"][0].get("title", "")
        print(f"rportd ha: the node answered HTTP {status}: {title}", file=sys.stderr)
        return 1
    data = body["data"]
    print(json.dumps(data, indent=1) if ns.json else describe(data))
    return 0
