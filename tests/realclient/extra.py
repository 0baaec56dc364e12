"""Checks that restart the real client with another configuration."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from .checks import Check, Context, Observation, expect, poll, tcp_echo_through, wait_connected
from .procs import CLIENT_AUTH, Client

AUTH_FAILED = "unable to authenticate"


async def refused_client(ctx: Context, auth: str, name: str, seconds: float = 12) -> dict[str, Any]:
    """Run a second real client with `auth` for `seconds`: what it logged and whether it got in."""
    other = Client(
        ctx.client.root.parent / f"{ctx.server.kind}-{name}",
        binary=ctx.client.binary,
        server_url=ctx.server.client_url,
        fingerprint=ctx.client.fingerprint,
        extra={"client": {"id": name, "auth": auth}},
    )
    await other.start()
    try:
        await asyncio.sleep(seconds)
        status, body = await ctx.call("", "GET", f"/clients/{name}", record=False)
        log = other.client_log(200)
    finally:
        running = other.running
        await other.stop()
    found = re.findall(r"error: client: (.{0,160})", log)
    errors = sorted({re.sub(r" \(attempt: \d+ of \w+\)", "", m) for m in found})
    return {
        "connected": status == 200 and body["data"]["connection_state"] == "connected",
        "client_still_running": running,
        "auth_failed_logged": AUTH_FAILED in log,
        "errors": [re.sub(r"\d+(\.\d+)?(ms|s|µs)", "<t>", e) for e in errors],
    }


async def check_wrong_password(ctx: Context) -> None:
    """A client with a wrong password is refused and keeps retrying, as upstream makes it."""
    seen = await refused_client(ctx, f"{CLIENT_AUTH[0]}:wrong-password", "rc-wrong-password")
    ctx.observations.append(Observation("wrong password: client side", 0, seen))
    expect(not seen["connected"], "a client with a wrong password was let in")
    expect(seen["auth_failed_logged"], f"the client did not log {AUTH_FAILED!r}: {seen}")
    expect(seen["client_still_running"], "the client exited after a refused login")


async def _restart_client(ctx: Context, extra: dict[str, dict[str, object]]) -> None:
    await ctx.client.stop()
    old = ctx.client
    ctx.client = Client(
        old.root,
        binary=old.binary,
        server_url=old.server_url,
        fingerprint=old.fingerprint,
        extra=extra,
    )
    await ctx.client.start()
    await wait_connected(ctx)


async def check_attributes_with_file(ctx: Context) -> None:
    """PUT /attributes reaches the client, which rewrites its attributes file."""
    path = ctx.workdir / "attributes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tags": ["from-file"], "labels": {"origin": "file"}}))
    await _restart_client(ctx, {"client": {"attributes_file_path": str(path)}})
    status, body = await ctx.call(
        "GET /clients/{id} (attributes file)", "GET", f"/clients/{ctx.client_id}"
    )
    expect(body["data"]["tags"] == ["from-file"], f"tags {body['data']['tags']!r}")
    expect(body["data"]["labels"] == {"origin": "file"}, f"labels {body['data']['labels']!r}")
    new = {"tags": ["put-1", "put-2"], "labels": {"set": "by-api"}}
    status, body = await ctx.call(
        "PUT attributes (file)", "PUT", f"/clients/{ctx.client_id}/attributes", json=new
    )
    expect(status in (200, 204), f"PUT attributes answered {status}: {body}")

    async def rewritten() -> bool:
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return False
        return bool(data.get("tags") == new["tags"] and data.get("labels") == new["labels"])

    await poll("the client rewrote its attributes file", rewritten, 15)
    await ctx.call("GET attributes (file)", "GET", f"/clients/{ctx.client_id}/attributes")
    status, body = await ctx.call(
        "GET /clients/{id} (after PUT attributes)", "GET", f"/clients/{ctx.client_id}"
    )
    expect(body["data"]["tags"] == new["tags"], f"tags after PUT {body['data']['tags']!r}")


async def _tunnel_passes(port: int) -> bool:
    try:
        return await tcp_echo_through(port, b"again") == b"again"
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return False


async def _tunnel_back(ctx: Context, label: str, tunnel: dict[str, Any]) -> None:
    """The client has `tunnel` again (on rportd: on the same port) and it passes bytes."""

    async def back() -> bool:
        status, body = await ctx.call("", "GET", f"/clients/{ctx.client_id}", record=False)
        if status != 200 or body["data"]["connection_state"] != "connected":
            return False
        # upstream picks a new random port; rportd gives the old one back where it is free
        same = [t for t in body["data"]["tunnels"] if t["rport"] == tunnel["rport"]]
        if ctx.server.kind == "ours":
            same = [t for t in same if t["lport"] == tunnel["lport"]]
        return bool(same) and await _tunnel_passes(int(same[0]["lport"]))

    await poll(f"the tunnel back after {label}", back, 60)
    await ctx.call(f"GET /clients/{{id}} after {label}", "GET", f"/clients/{ctx.client_id}")


async def check_tunnel_after_client_restart(ctx: Context) -> None:
    """A tunnel made through the API comes back when the client reconnects."""
    status, body = await ctx.call(
        "PUT tunnels (before client restart)",
        "PUT",
        f"/clients/{ctx.client_id}/tunnels?remote=127.0.0.1:{ctx.tcp_echo_port}&acl=127.0.0.1",
    )
    expect(status == 200, f"tunnel answered {status}: {body}")
    tunnel = dict(body["data"])
    await ctx.client.stop()
    await ctx.client.start()
    await _tunnel_back(ctx, "client restart", tunnel)


async def check_server_restart(ctx: Context) -> None:
    """After a server restart the client reconnects by itself and has its tunnels back."""
    _, body = await ctx.call("", "GET", f"/clients/{ctx.client_id}", record=False)
    tunnels = body["data"]["tunnels"]
    expect(bool(tunnels), "no tunnel to follow (run after 'tunnel after client restart')")
    await ctx.server.stop()
    await ctx.server.start()
    await wait_connected(ctx, 60)
    await _tunnel_back(ctx, "server restart", tunnels[0])
    await ctx.call("GET /clients (after server restart)", "GET", "/clients")


EXTRA_CHECKS: dict[str, Check] = {
    "tunnel after client restart": check_tunnel_after_client_restart,
    "server restart": check_server_restart,
    "wrong password": check_wrong_password,
    "attributes with file": check_attributes_with_file,
}
